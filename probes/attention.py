"""Attention probes: ``scaled_dot_product_attention`` forward and backward, causal and not.

Case shape is ``(batch, heads, length, head_dim)``; params say ``causal`` and ``backward``.
A backward case's output is the forward output followed by dQ, dK and dV (one flat tensor),
for a seeded upstream gradient. The fp64 reference is the math formulation on the CPU.

Determinism: every case is judged bit for bit across repeats. On an H200 (torch 2.11, quick
suite) the forward kernels were bit-identical over repeats, but the memory-efficient and cuDNN
backward kernels were not (2-3 distinct outputs over 3 repeats: they accumulate key blocks in
parallel) while the sweep only *preferred* deterministic kernels. Backward cases therefore run
under ``strict_determinism``, where PyTorch picks the deterministic variants or raises (an
error, not a fault). Not yet re-measured on a GPU: run ``ONLY=sweep benchmarks/gpu_session.sh``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from probes.base import Case, Outcome, Probe
from probes.harness import (
    DTYPES,
    UNIT_ROUNDOFF,
    generator,
    judge,
    randn,
    run_repeats,
    strict_determinism,
    throughput,
)
from probes.reference import cached, reference_key
from probes.sizing import gemm_flops, host_seconds, sized

_FULL_REFERENCE_WORK = 1 << 26
REFERENCE_HEADS = 2


def _inputs(case: Case, seed: int) -> list[torch.Tensor]:
    dtype = DTYPES[case.dtype]
    # q, k, v and the upstream gradient, each from its own stream of the seed
    return [randn(case.shape, seed, "attention", name, case.shape, dtype=dtype) for name in ("q", "k", "v", "grad")]


def _attention(q, k, v, grad, causal: bool, backward: bool) -> torch.Tensor:
    if not backward:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal).reshape(-1)
    with strict_determinism():
        q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad)
    return torch.cat([t.reshape(-1) for t in (out.detach(), dq, dk, dv)])


def sampled_heads(case: Case, seed: int) -> list[tuple[int, int]] | None:
    """(batch, head) pairs the fp64 reference covers on large cases (heads are independent,
    forward and backward); None: all of them. The repeats and the cohort digest cover the rest."""
    b, h, n, d = case.shape
    if b * h * n * n * d <= _FULL_REFERENCE_WORK:
        return None
    picks = torch.randperm(b * h, generator=generator(seed, "attention-heads", case.shape))[:REFERENCE_HEADS]
    return [(int(i) // h, int(i) % h) for i in picks.sort().values]


def _select(parts: torch.Tensor, heads: list[tuple[int, int]]) -> torch.Tensor:
    """From a (parts, batch, heads, n, d) view, the sampled heads as (parts, len(heads), n, d)."""
    return torch.stack([parts[:, bi, hi] for bi, hi in heads], dim=1)


class AttentionProbe(Probe):
    name = "attention"
    version = 1

    def cases(self, suite: str) -> list[Case]:
        shape = {"quick": (2, 2, 64, 32), "standard": (4, 8, 512, 64)}.get(suite)
        if shape is None:
            return []
        return [
            Case(name, shape, dtype, {"causal": causal, "backward": backward})
            for dtype in ("fp32",)
            for backward in (False, True)
            for causal in (False, True)
            for name in (("backward" if backward else "forward") + ("_causal" if causal else ""),)
        ]

    def cases_for(self, suite: str, device: torch.device) -> list[Case]:
        base = self.cases(suite)
        if not base:
            return base
        shape = (4, 16, 2048, 128) if suite == "quick" else (8, 32, 4096, 128)
        large = [Case(c.name, shape, dtype, dict(c.params)) for dtype in ("bf16", "fp16") for c in base]
        return base + sized(device, large, lambda case: self.estimate_s(case, device), self.footprint)

    @staticmethod
    def footprint(case: Case) -> float:
        """Device bytes: the fp32 score matrix of the math path (x3 with its gradient) and q, k, v, out."""
        b, h, n, d = case.shape
        return 3 * 4.0 * b * h * n * n + 8 * 4.0 * b * h * n * d

    def estimate_s(self, case: Case, device: torch.device) -> float:
        b, h, n, d = case.shape
        flops = 4.0 * b * h * n * n * d * (3.5 if case.params.get("backward") else 1.0)
        rate = gemm_flops(device, case.dtype if case.dtype in ("bf16", "fp16") else "fp32", cpu=3e10)
        return 0.05 + 3 * flops / rate + host_seconds(device, 4 * b * h * n * d)

    def run(self, case: Case, device: torch.device, seed: int, repeats: int, faults=None) -> Outcome:
        causal, backward = bool(case.params.get("causal")), bool(case.params.get("backward"))
        q, k, v, grad = _inputs(case, seed)
        heads = sampled_heads(case, seed)

        def fp64_reference() -> torch.Tensor:
            tensors = [t.to(torch.float64) for t in (q, k, v, grad)]
            if heads is not None:  # the sampled heads as one batch of len(heads) heads
                tensors = [_select(t.unsqueeze(0), heads) for t in tensors]
            return _attention(*tensors, causal=causal, backward=backward)

        ref = cached(reference_key(self.name, self.version, case, seed), fp64_reference)
        on_device = [t.to(device) for t in (q, k, v, grad)]
        result = run_repeats(lambda: _attention(*on_device, causal, backward), device, repeats, faults, self.name, case.name)
        observed = None
        if heads is not None:
            parts = result.first.reshape(4 if backward else 1, *case.shape)
            observed = _select(parts, heads).reshape(-1)
        length, head_dim = case.shape[2], case.shape[3]
        # Softmax-weighted sums of `length` terms of `head_dim`-long dot products: roundoff
        # grows with sqrt of both; gradients are scaled by the largest reference value.
        u = UNIT_ROUNDOFF[case.dtype]
        scale = float(ref.abs().max())
        bound = 16.0 * u * ((length + head_dim) ** 0.5) * (ref.abs() + 0.1 * scale)
        outcome = judge(result, ref, bound, observed=observed)
        b, h, n, d = case.shape
        flops = 4.0 * b * h * n * n * d * (0.5 if causal else 1.0) * (3.5 if backward else 1.0)
        return throughput(outcome, flops, "TFLOP/s")


PROBES = (AttentionProbe,)
