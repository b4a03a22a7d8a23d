"""Convolution probes: ``conv2d`` forward and backward (input and weight gradients).

Case shape is ``(batch, in_channels, height, width, out_channels, kernel)``; params give
``stride``, ``padding`` and ``backward``. The error bound is per element: a convolution is
multilinear, so running it on the absolute values of its operands in fp64 gives the
magnitude each output's rounding errors scale with.

Determinism: cuDNN has nondeterministic backward algorithms (atomics in the weight
gradient); ``cudnn.deterministic`` and ``use_deterministic_algorithms`` make it pick
deterministic ones, so outputs are judged bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from probes.base import Case, Outcome, Probe
from probes.harness import DTYPES, UNIT_ROUNDOFF, judge, randn, run_repeats, throughput
from probes.reference import cached, reference_key
from probes.sizing import gemm_flops, host_seconds, sized


def _inputs(case: Case, seed: int) -> list[torch.Tensor]:
    n, c, h, w, k, r = case.shape
    dtype = DTYPES[case.dtype]
    x = randn((n, c, h, w), seed, "conv", "x", case.shape, dtype=dtype)
    weight = randn((k, c, r, r), seed, "conv", "w", case.shape, dtype=dtype)
    stride, padding = case.params.get("stride", 1), case.params.get("padding", 0)
    ho, wo = (h + 2 * padding - r) // stride + 1, (w + 2 * padding - r) // stride + 1
    grad = randn((n, k, ho, wo), seed, "conv", "grad", case.shape, dtype=dtype)
    return [x, weight, grad]


def _conv(x, weight, grad, stride: int, padding: int, backward: bool) -> torch.Tensor:
    if not backward:
        return F.conv2d(x, weight, stride=stride, padding=padding).reshape(-1)
    x, weight = x.detach().requires_grad_(True), weight.detach().requires_grad_(True)
    out = F.conv2d(x, weight, stride=stride, padding=padding)
    dx, dw = torch.autograd.grad(out, (x, weight), grad)
    return torch.cat([out.detach().reshape(-1), dx.reshape(-1), dw.reshape(-1)])


class ConvProbe(Probe):
    name = "conv"
    version = 1

    def cases(self, suite: str) -> list[Case]:
        shapes = {
            "quick": [(2, 8, 32, 32, 16, 3), (2, 16, 32, 32, 32, 1)],
            "standard": [(8, 32, 64, 64, 64, 3), (8, 64, 56, 56, 128, 1), (4, 3, 224, 224, 64, 7)],
        }.get(suite, [])
        return self._cases(shapes, ("fp32",))

    def cases_for(self, suite: str, device: torch.device) -> list[Case]:
        base = self.cases(suite)
        if not base:
            return base
        # Batch 8 keeps the one-off fp64 CPU reference (value and magnitude, forward and
        # backward) to seconds; the kernels are the same ones larger batches reach.
        large = self._cases([(8, 64, 56, 56, 64, 3), (8, 256, 28, 28, 512, 1)], ("bf16", "fp16"))
        return base + sized(device, large, lambda case: self.estimate_s(case, device), self.footprint)

    @staticmethod
    def _cases(shapes, dtypes) -> list[Case]:
        cases = []
        for shape in shapes:
            r = shape[5]
            params = {"stride": 1 if r != 1 else 2, "padding": r // 2}
            for dtype in dtypes:
                for backward in (False, True):
                    name = f"{r}x{r}_{'backward' if backward else 'forward'}"
                    cases.append(Case(name, tuple(shape), dtype, {**params, "backward": backward}))
        return cases

    @staticmethod
    def footprint(case: Case) -> float:
        """Device bytes: input, weight and output with their gradients, in fp32 at most."""
        n, c, h, w, k, r = case.shape
        return 2 * 4.0 * (n * c * h * w + k * c * r * r + n * k * h * w)

    def estimate_s(self, case: Case, device: torch.device) -> float:
        n, c, h, w, k, r = case.shape
        flops = 2.0 * n * c * h * w * k * r * r * (3 if case.params.get("backward") else 1)
        rate = gemm_flops(device, case.dtype if case.dtype in ("bf16", "fp16") else "fp32", cpu=3e10)
        return 0.05 + 3 * flops / rate + host_seconds(device, n * c * h * w + k * c * r * r)

    def run(self, case: Case, device: torch.device, seed: int, repeats: int, faults=None) -> Outcome:
        stride, padding = int(case.params.get("stride", 1)), int(case.params.get("padding", 0))
        backward = bool(case.params.get("backward"))
        x, weight, grad = _inputs(case, seed)

        def fp64_reference() -> torch.Tensor:
            args = [t.to(torch.float64) for t in (x, weight, grad)]
            value = _conv(*args, stride, padding, backward)
            magnitude = _conv(*(t.abs() for t in args), stride, padding, backward)
            return torch.stack([value, magnitude])

        ref = cached(reference_key(self.name, self.version, case, seed), fp64_reference)
        on_device = [t.to(device) for t in (x, weight, grad)]
        result = run_repeats(
            lambda: _conv(*on_device, stride, padding, backward), device, repeats, faults, self.name, case.name
        )
        n, c, h, w, k, r = case.shape
        terms = max(c * r * r, k * r * r, n * h * w) if backward else c * r * r
        u_acc = UNIT_ROUNDOFF["fp32"] if case.dtype in ("bf16", "fp16") else UNIT_ROUNDOFF[case.dtype]
        u_out = UNIT_ROUNDOFF[case.dtype]
        bound = 4.0 * (terms**0.5 * u_acc * ref[1] + u_out * ref[0].abs()) + 1e-30
        outcome = judge(result, ref[0], bound)
        flops = 2.0 * n * c * h * w * k * r * r / (stride * stride) * (3 if backward else 1)
        return throughput(outcome, flops, "TFLOP/s")


PROBES = (ConvProbe,)
