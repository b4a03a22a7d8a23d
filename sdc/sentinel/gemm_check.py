"""Sampled GEMM checksums (algorithm-based fault tolerance) for compute that has no replica:
FSDP/ZeRO-3 shards and tensor-parallel pieces, where no second copy can outvote a wrong one.

For an ``nn.Linear`` computing ``Y = X Wᵀ + b``, a random vector ``r`` gives two ways to the
same numbers: ``Y r`` and ``X (Wᵀ r) + b·r``. HF ``transformers``' ``Conv1D`` (GPT-2 and its
relatives) is the same product with the weight stored transposed (``Y = X W + b``, ``W`` of shape
(in, out)); it is checked through a transposed view of its weight, and recognised by class name
and module so that the sentinel never imports ``transformers``. A unit that computed one element of ``Y`` wrong
moves the first and not the second. The backward pass is checked the same way:
``dX = dY W``, so ``dX s = dY (W s)``. The two sides differ by roundoff only, bounded from the
operands' magnitudes and the dtype's unit roundoff (``|X| (|W|ᵀ |r|)``, times ``eps`` and a
safety factor), so a healthy run never trips it and an exponent or high-mantissa upset always
does.

The sentinel creates one when ``gemm_check_every > 0`` (the default); its check schedule says
which steps are checked (every ``gemm_check_every`` steps, stretched like every other periodic
check when their costs exceed the check budget). On checked steps hooks are put on
``gemm_check_layers`` Linear/Conv1D layers, rotating through the model, and removed afterwards;
other steps pay nothing. Works on any
PyTorch backend (plain tensor ops). The forward check is a forward hook that changes nothing;
the backward check is a hook on the layer's own matrix-product node in the autograd graph
(``AddmmBackward``/``MmBackward``), so in-place ops after the layer keep working. The result is exchanged at the step's end, so every rank
reaches the same verdict: the failing rank is named (``kind: gemm_check``).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Sequence

import torch
from torch import nn

from sdc.sentinel.vote import Finding

log = logging.getLogger(__name__)

# Roundoff allowance: the bound's multiple of eps. Generous: an upset that matters is orders
# of magnitude above it, while accumulation-order differences stay well below.
SAFETY = 64.0


# Unit roundoff of the reduced-precision paths an fp32 matmul may take: with
# ``torch.set_float32_matmul_precision("high")`` (or ``torch.backends.cuda.matmul.allow_tf32``)
# its operands are rounded to TF32's 10-bit mantissa, with "medium" to bf16's 7 bits. Training
# commonly turns TF32 on; an fp32 bound would then flag every healthy product.
TF32_EPS = 2.0**-10
BF16_EPS = 2.0**-7


def matmul_eps(dtype: torch.dtype) -> float:
    """Unit roundoff of a matmul producing ``dtype`` under the process's current precision settings."""
    if not dtype.is_floating_point:
        return 0.0
    eps = torch.finfo(dtype).eps
    if dtype != torch.float32:
        return eps
    precision = torch.get_float32_matmul_precision()
    if precision == "medium":
        return max(eps, BF16_EPS)
    cuda_tf32 = torch.backends.cuda.matmul.allow_tf32 if torch.cuda.is_available() else False
    if precision == "high" or cuda_tf32:
        return max(eps, TF32_EPS)
    return eps


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def checksum_gap(y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 generator: torch.Generator) -> float:
    """How far ``Y r`` is from ``X (Wᵀ r) + b·r``, in units of the roundoff bound (> 1: wrong).

    Computed in fp32 (fp64 for an fp64 layer) on every device: the check's own roundoff is of
    the GEMM's order, far inside the bound, and an fp64 copy of every checked weight made the
    check cost ~15x its GEMM at small batches on a CPU (matrix-vector products as ``Wᵀ @ r``:
    ``r @ W`` is 6x slower there).
    """
    acc = torch.float64 if y.dtype == torch.float64 else torch.float32
    r = (torch.rand(weight.shape[0], generator=generator, dtype=acc) + 0.5).to(y.device)
    y2, x2 = y.reshape(-1, y.shape[-1]).to(acc), x.reshape(-1, x.shape[-1]).to(acc)
    w = weight.to(acc)
    direct = y2 @ r
    rebuilt = x2 @ (w.t() @ r)
    magnitude = x2.abs() @ (w.abs().t() @ r) + y2.abs() @ r  # r > 0
    if bias is not None:
        rebuilt = rebuilt + bias.to(acc) @ r
    bound = SAFETY * matmul_eps(y.dtype) * magnitude + 1e-30
    gap = ((direct - rebuilt).abs() / bound)
    worst = gap.max() if gap.numel() else torch.zeros((), device=y.device)
    if not torch.isfinite(direct).all() and torch.isfinite(x2).all() and torch.isfinite(w).all():
        return float("inf")  # a non-finite output from finite operands
    return float(worst)


def is_hf_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is (a subclass of) ``transformers.pytorch_utils.Conv1D``.

    By name and module rather than ``isinstance``: importing ``transformers`` costs seconds and
    the sentinel must work without it installed."""
    return any(cls.__name__ == "Conv1D" and cls.__module__.split(".")[0] == "transformers"
               for cls in type(module).__mro__)


def gemm_weight(module: nn.Module) -> torch.Tensor | None:
    """The layer's weight as ``nn.Linear`` holds it, (out, in), or None for a module that is no
    checked GEMM layer. A Conv1D's (in, out) weight becomes a transposed view, not a copy."""
    if isinstance(module, nn.Linear):
        return _full(module.weight)
    if is_hf_conv1d(module) and getattr(module, "weight", None) is not None and module.weight.dim() == 2:
        return _full(module.weight).t()
    return None


def _gemm_node(node: Any) -> Any:
    """The autograd node of a Linear's (or Conv1D's) matrix product, through the reshape of a
    >2-D input or output."""
    for _ in range(3):
        if node is None:
            return None
        name = node.name()
        if name.startswith(("AddmmBackward", "MmBackward")):
            return node
        if not name.startswith(("ViewBackward", "UnsafeViewBackward", "ReshapeAliasBackward", "AliasBackward")):
            return None
        node = node.next_functions[0][0] if node.next_functions else None
    return None


class GemmChecks:
    """Rotating ABFT checks on a model's ``nn.Linear`` and HF ``Conv1D`` layers (create on
    every rank alike).

    Args:
        model: the module whose Linear/Conv1D layers are checked.
        layers: how many of those layers one checked step covers.
        seed: the checksum vectors' generator seed.
        timer: a context manager factory timing the checksums' work (the check schedule's
            measurement of its ``gemm`` kind, so that the checksums count against the budget).
    """

    def __init__(self, model: nn.Module, layers: int = 1, seed: int = 0,
                 timer: Callable[[], ContextManager[Any]] = nullcontext):
        self.linears: list[tuple[str, nn.Module]] = [
            (n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) or is_hf_conv1d(m)]
        self.layers = max(1, layers)
        self.generator = torch.Generator().manual_seed(seed)
        self.timer = timer
        self._handles: list[Any] = []
        self._failures: list[tuple[str, str, float]] = []
        self._checked: list[str] = []
        self.rounds = 0  # checked steps so far: the rotation's position, the same on every rank

    @property
    def armed(self) -> bool:
        return bool(self._handles)

    def chosen(self) -> list[tuple[str, nn.Module]]:
        """The layers the next checked step covers."""
        start = self.rounds * self.layers
        return [self.linears[(start + i) % len(self.linears)] for i in range(min(self.layers, len(self.linears)))]

    def arm(self) -> None:
        """Hook the layers of this checked step (called by the sentinel at its beginning)."""
        self.disarm()
        self._failures, self._checked = [], []
        if not self.linears:
            return
        chosen = self.chosen()
        self.rounds += 1  # before hooking: a failure below must not shift this rank's rotation
        for name, module in chosen:
            self._handles.append(module.register_forward_hook(self._forward(name)))
            self._checked.append(name)

    def disarm(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _forward(self, name: str):
        # A forward hook that returns nothing wraps nothing: in-place ops on the output (an
        # in-place ReLU after the layer) stay legal, unlike with a module backward hook.
        def hook(module: nn.Module, inputs: Sequence[Any], output: torch.Tensor) -> None:
            if not torch.is_grad_enabled() or not isinstance(output, torch.Tensor):
                return
            try:
                weight = gemm_weight(module).detach()  # (out, in), whichever way it is stored
                with self.timer():
                    gap = checksum_gap(output.detach(), inputs[0].detach(), weight,
                                       None if module.bias is None else _full(module.bias).detach(), self.generator)
                if gap > 1.0:
                    self._failures.append((name, "forward", gap))
                node = _gemm_node(output.grad_fn)
                if node is not None:
                    node.register_hook(self._backward(name, weight, node.name()))
            except Exception:
                log.exception("sdc sentinel: GEMM checksum of %s failed", name)

        return hook

    def _backward(self, name: str, weight: torch.Tensor, kind: str):
        """A hook on the layer's own GEMM node: its input gradient ``dX = dY W``."""
        def hook(grad_inputs: Sequence[Any], grad_outputs: Sequence[Any]) -> None:
            # addmm(bias, X, Wᵀ) -> (d bias, dX, d Wᵀ); mm(X, Wᵀ) -> (dX, d Wᵀ); a Conv1D's
            # addmm(bias, X, W) has the same layout
            dx = grad_inputs[1] if kind.startswith("Addmm") else grad_inputs[0]
            dy = grad_outputs[0]
            if dx is None or dy is None:
                return  # the first layer: no gradient for its input
            try:
                with self.timer():
                    gap = checksum_gap(dx.detach(), dy.detach(), weight.t(), None, self.generator)
                if gap > 1.0:
                    self._failures.append((name, "backward", gap))
            except Exception:
                log.exception("sdc sentinel: GEMM checksum of %s (backward) failed", name)

        return hook

    def collect(self, comm: Any, peers: Any) -> list[Finding]:
        """At a checked step's end, on every rank (armed or not: a rank whose arming failed
        still enters the exchange): exchange who failed and turn it into findings."""
        self.disarm()
        failed = torch.tensor([int(bool(self._failures))], dtype=torch.int64)
        if not comm.max_(failed).tolist()[0]:
            return [Finding("gemm_check", "ok", (), {"layers": list(self._checked)})]
        rows = comm.gather_objects([(n, where, g) for n, where, g in self._failures])
        bad = [i for i, r in enumerate(rows) if r]
        suspects = tuple(peers.suspect(i, tuple(dict.fromkeys(n for n, _, _ in rows[i]))) for i in bad)
        details = {"layers": list(self._checked),
                   "failures": {str(peers.rank(i)): [{"layer": n, "pass": w, "gap": g} for n, w, g in rows[i]] for i in bad}}
        return [Finding("gemm_check", "divergence", suspects, details)]
