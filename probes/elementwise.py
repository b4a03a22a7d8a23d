"""Elementwise probes: exp, log, sin, tanh, erf, rsqrt and pow over dense input ranges.

Each case evaluates one op on a dense, seeded sweep of its domain in the case dtype plus the
edge values where math libraries go wrong: zeros of both signs, denormals, the smallest
normal, the largest finite value, infinities and NaN. The bound is a few ulps of the fp64
reference rounded to the dtype; non-finite results must match exactly. Denormal results may
be flushed to zero by some hardware, which the absolute floor (the smallest normal) allows.

Case shape is ``(points,)``; ``params["op"]`` names the op. All deterministic.
"""

from __future__ import annotations

import math

import torch

from probes.base import Case, Outcome, Probe
from probes.harness import (
    DTYPES,
    UNIT_ROUNDOFF,
    generator,
    judge,
    run_repeats,
    throughput,
)
from probes.reference import cached, reference_key
from probes.sizing import stream_bandwidth, host_seconds, sized

OPS = ("exp", "log", "sin", "tanh", "erf", "rsqrt", "pow")
POW_EXPONENT = 2.5


def _apply(op: str, x: torch.Tensor) -> torch.Tensor:
    if op == "pow":
        return torch.pow(x, POW_EXPONENT)
    return getattr(torch, op)(x)


def _domain(op: str, dtype: torch.dtype) -> tuple[float, float]:
    """The dense range of inputs, kept a little inside overflow so results stay finite."""
    info = torch.finfo(dtype)
    if op == "exp":
        return math.log(info.tiny) * 0.98, math.log(info.max) * 0.98
    if op in ("log", "rsqrt"):
        return 0.0, info.max * 0.5
    if op == "sin":
        return -64 * math.pi, 64 * math.pi
    if op == "pow":
        return 0.0, info.max ** (1 / POW_EXPONENT) * 0.9
    return -12.0, 12.0


def edge_values(dtype: torch.dtype) -> list[float]:
    info = torch.finfo(dtype)
    denormals = [info.tiny / 2, info.tiny / 2**3, info.tiny * 2.0 ** -(info.bits // 4)]
    values = [0.0, -0.0, 1.0, -1.0, 0.5, info.tiny, -info.tiny, info.max, -info.max, math.inf, -math.inf, math.nan]
    return values + denormals + [-d for d in denormals]


def inputs(case: Case, seed: int) -> torch.Tensor:
    """Seeded dense sweep of the domain (log-spaced for one-sided domains) plus edge values."""
    op, dtype, points = str(case.params["op"]), DTYPES[case.dtype], case.shape[0]
    low, high = _domain(op, dtype)
    gen = generator(seed, "elementwise", op, case.shape)
    dense = max(points - 32, 1)
    u = torch.rand(dense, generator=gen, dtype=torch.float64)
    if low == 0.0:
        tiny = torch.finfo(dtype).tiny
        values = torch.exp(math.log(tiny) + u * (math.log(high) - math.log(tiny)))
    else:
        values = low + u * (high - low)
    edges = [e for e in edge_values(dtype) if not (op == "sin" and math.isfinite(e) and abs(e) > 1e6)]
    full = torch.cat([values, torch.tensor(edges, dtype=torch.float64)])[:points]
    return full.to(dtype)


class ElementwiseProbe(Probe):
    name = "elementwise"
    version = 1

    def cases(self, suite: str) -> list[Case]:
        spec = {"quick": (1 << 14, ("fp32", "bf16")), "standard": (1 << 22, ("fp32", "bf16", "fp16"))}.get(suite)
        if spec is None:
            return []
        points, dtypes = spec
        return [Case(op, (points,), dtype, {"op": op}) for dtype in dtypes for op in OPS]

    def cases_for(self, suite: str, device: torch.device) -> list[Case]:
        base = self.cases(suite)
        if not base:
            return base
        large = [Case(c.name, (1 << 24,), c.dtype, dict(c.params)) for c in base if c.dtype == "fp32"]
        return base + sized(device, large, lambda case: self.estimate_s(case, device), lambda case: 16.0 * case.shape[0])

    def estimate_s(self, case: Case, device: torch.device) -> float:
        # A transcendental costs about 20 copies' worth of memory traffic per element.
        rate = stream_bandwidth(device, cpu=2e8 * 8 * 20) / (8 * 20)
        return 0.02 + 3 * case.shape[0] / rate + host_seconds(device, case.shape[0])

    def run(self, case: Case, device: torch.device, seed: int, repeats: int, faults=None) -> Outcome:
        op, dtype = str(case.params["op"]), DTYPES[case.dtype]
        x = inputs(case, seed)
        # The fp64 result rounded to the case dtype: the best the chip can do.
        ref = cached(
            reference_key(self.name, self.version, case, seed), lambda: _apply(op, x.to(torch.float64)).to(dtype).to(torch.float64)
        )
        x_dev = x.to(device)
        result = run_repeats(lambda: _apply(op, x_dev), device, repeats, faults, self.name, case.name)
        info = torch.finfo(dtype)
        # A few ulps for fp32 libm implementations (SLEEF, CUDA libdevice); half-precision
        # ops compute in fp32 and round, so one ulp of their own plus the fp32 error.
        # Some CPU half-precision kernels use short polynomials with an absolute, not relative,
        # error near zero (bf16 erf on x86 is 4% off at 2e-6): a floor of 2**-20 allows it.
        ulps = 4.0 if case.dtype == "fp32" else 2.0
        floor = info.tiny if case.dtype == "fp32" else 2.0**-20
        bound = ulps * 2 * UNIT_ROUNDOFF[case.dtype] * ref.abs() + floor
        outcome = judge(result, ref, bound)
        return throughput(outcome, 2.0 * x.numel() * x.element_size(), "GB/s")


PROBES = (ElementwiseProbe,)
