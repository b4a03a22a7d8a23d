"""GEMM probes: seeded matrix multiplies judged against an fp64 reference and their repeats."""

from __future__ import annotations

import math
import time

import torch

from probes.base import Case, Outcome, Probe
from sdc.fingerprint import digest

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_EPS = {"fp32": 2.0**-23, "bf16": 2.0**-7, "fp16": 2.0**-10}


def _inputs(m: int, n: int, k: int, seed: int, dtype: torch.dtype, device: torch.device):
    # Generated on the CPU so every chip (and every backend) gets the same bytes.
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(m, k, generator=gen, dtype=torch.float64)
    b = torch.randn(k, n, generator=gen, dtype=torch.float64)
    return a.to(dtype), b.to(dtype), a.to(dtype).to(device), b.to(dtype).to(device)


def _synchronize(device: torch.device) -> None:
    if device.type != "cpu":
        module = getattr(torch, device.type, None)
        if module is not None and hasattr(module, "synchronize"):
            module.synchronize(device)


class GemmProbe(Probe):
    name = "gemm"
    version = 1

    def cases(self, suite: str):
        if suite == "quick":
            return [Case("square", (256, 256, 256), "fp32"), Case("odd", (17, 301, 129), "fp32")]
        return [Case("square", (1024, 1024, 1024), "fp32"), Case("odd", (17, 3001, 129), "fp32")]

    def run(self, case, device, seed, repeats, faults=None):
        m, n, k = case.shape
        dtype = _DTYPES[case.dtype]
        a_host, b_host, a, b = _inputs(m, n, k, seed, dtype, device)
        reference = a_host.to(torch.float64) @ b_host.to(torch.float64)
        # Error bound: k products accumulated in the working precision, relative to |a||b|.
        scale = (a_host.to(torch.float64).abs() @ b_host.to(torch.float64).abs()).max().item()
        bound = 2.0 * math.sqrt(k) * _EPS[case.dtype] * scale + 1e-30
        digests, timings, out = [], [], None
        for _ in range(repeats):
            _synchronize(device)
            start = time.perf_counter()
            out = a @ b
            _synchronize(device)
            timings.append(time.perf_counter() - start)
            digests.append(digest(out))
        err = (out.to("cpu", torch.float64) - reference).abs()
        max_abs = float(err.max())
        max_rel = float((err / reference.abs().clamp_min(scale * 1e-6)).max())
        distinct = len(set(digests))
        status = "ok" if max_abs <= bound and distinct == 1 else "mismatch"
        best = min(timings)
        message = ""
        if max_abs > bound:
            message = f"max abs error {max_abs:.3g} exceeds bound {bound:.3g}"
        elif distinct > 1:
            message = f"{distinct} distinct digests over {repeats} repeats"
        return Outcome(
            status=status,
            repeats=repeats,
            distinct_repeat_digests=distinct,
            timings=timings,
            digest=digests[0],
            max_abs_err=max_abs,
            max_rel_err=max_rel,
            error_bound=bound,
            throughput=2.0 * m * n * k / best / 1e12,
            throughput_unit="TFLOP/s",
            message=message,
        )


PROBES = (GemmProbe,)
