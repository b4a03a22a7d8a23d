"""GEMM probes: seeded matrix multiplies judged against an fp64 reference and their repeats.

Shapes are chosen to reach the different kernels a BLAS picks: square (the big tiled
kernels), odd sizes (edge tiles, no vector alignment), tall-skinny and GEMV (split-K and
memory-bound paths) and batched. Precision is checked at every scale: for large shapes the
fp64 reference covers a seeded sample of output rows (computing all of it on the CPU would
take longer than the sweep), the repeats and the cohort digest cover the rest.

Case shape is ``(m, n, k)`` or ``(batch, m, n, k)``. dtypes: fp32, tf32 (fp32 storage,
TF32 tensor cores; CUDA only), bf16, fp16, fp8e4m3 (``torch._scaled_mm``; CUDA compute
capability 8.9+). All GEMMs are deterministic on the backends we know (cuBLAS with a fixed
workspace config, CPU BLAS with a fixed thread count): judged bit for bit over repeats.
"""

from __future__ import annotations

import torch

from probes.base import Case, Outcome, Probe, Unsupported
from probes.harness import (
    DTYPES,
    UNIT_ROUNDOFF,
    Repeats,
    generator,
    judge,
    randn,
    run_repeats,
    throughput,
)
from probes.reference import cached, reference_key
from probes.sizing import gemm_flops, host_seconds, sized

REFERENCE_ROWS = 64  # output rows checked against fp64 on large shapes
_FULL_REFERENCE_MACS = 1 << 27

# Accumulation roundoff per case dtype: bf16/fp16 accumulate in fp32 (reduced-precision
# split-K reductions are switched off in ``set_deterministic``); TF32 rounds its inputs to 10
# mantissa bits; fp8 tensor cores accumulate with fewer bits than fp32 (counted as fp16).
_ACCUMULATE = {"fp32": "fp32", "tf32": "tf32", "bf16": "fp32", "fp16": "fp32", "fp8e4m3": "fp16"}
_OUTPUT = {"fp32": "fp32", "tf32": "fp32", "bf16": "bf16", "fp16": "fp16", "fp8e4m3": "bf16"}


def _dims(case: Case) -> tuple[int, int, int, int]:
    if len(case.shape) == 4:
        return case.shape  # type: ignore[return-value]
    m, n, k = case.shape
    return 1, m, n, k


def check_supported(dtype: str, device: torch.device) -> None:
    if dtype == "tf32" and device.type != "cuda":
        raise Unsupported("tf32 is a CUDA tensor-core mode")
    if dtype == "fp8e4m3":
        if device.type != "cuda" or not hasattr(torch, "float8_e4m3fn"):
            raise Unsupported("fp8 GEMM needs CUDA (torch._scaled_mm)")
        if torch.cuda.get_device_capability(device) < (8, 9):
            raise Unsupported("fp8 GEMM needs compute capability 8.9 or newer")


def host_inputs(case: Case, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The operands on the CPU, already rounded to the case dtype (fp8: scaled into range)."""
    batch, m, n, k = _dims(case)
    storage = torch.float32 if case.dtype in ("tf32", "fp8e4m3") else DTYPES[case.dtype]
    a = randn((batch, m, k), seed, "gemm", "a", case.shape, dtype=storage)
    b = randn((batch, k, n), seed, "gemm", "b", case.shape, dtype=storage)
    if case.dtype == "fp8e4m3":
        a, b = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn)
    return a, b


def reference_rows(case: Case, seed: int) -> torch.Tensor | None:
    """The output rows the reference covers: all (None) for small shapes, a seeded sample else."""
    batch, m, n, k = _dims(case)
    if batch * m * n * k <= _FULL_REFERENCE_MACS or m <= REFERENCE_ROWS:
        return None
    return torch.randperm(m, generator=generator(seed, "gemm-rows", case.shape))[:REFERENCE_ROWS].sort().values


def reference(a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """fp64 product and magnitude (|a| @ |b|) stacked: [0] value, [1] magnitude for the bound."""
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    if rows is not None:
        a64 = a64[:, rows, :]
    return torch.stack([a64 @ b64, a64.abs() @ b64.abs()])


def matmul(a: torch.Tensor, b: torch.Tensor, dtype: str) -> torch.Tensor:
    if dtype == "fp8e4m3":
        one = torch.ones((), device=a.device)
        # _scaled_mm wants the second operand column-major: transpose a contiguous b^T.
        return torch.stack(
            [torch._scaled_mm(a[i], b[i].t().contiguous().t(), one, one, out_dtype=torch.bfloat16) for i in range(a.shape[0])]
        )
    return torch.matmul(a, b)


class GemmProbe(Probe):
    name = "gemm"
    version = 2

    def cases(self, suite: str) -> list[Case]:
        if suite == "quick":
            return [
                Case("square", (256, 256, 256), "fp32"),
                Case("odd", (17, 301, 129), "fp32"),
                Case("square", (128, 128, 128), "bf16"),
                Case("tall", (1024, 64, 64), "fp16"),
                Case("batched", (8, 64, 96, 80), "fp32"),
                Case("square", (256, 256, 256), "tf32"),
                Case("square", (256, 256, 256), "fp8e4m3"),
            ]
        if suite == "standard":
            return [
                Case("square", (1024, 1024, 1024), "fp32"),
                Case("square", (1024, 1024, 1024), "bf16"),
                Case("square", (1024, 1024, 1024), "fp16"),
                Case("square", (1024, 1024, 1024), "tf32"),
                Case("square", (1024, 1024, 1024), "fp8e4m3"),
                Case("odd", (17, 3001, 129), "fp32"),
                Case("odd", (17, 3001, 129), "bf16"),
                Case("gemv", (1, 4096, 4096), "fp32"),
                Case("tall", (8192, 64, 512), "fp32"),
                Case("batched", (16, 128, 128, 256), "bf16"),
            ]
        return []

    def cases_for(self, suite: str, device: torch.device) -> list[Case]:
        base = self.cases(suite)
        if suite not in ("quick", "standard"):
            return base
        big = 8192 if suite == "quick" else 16384
        return base + sized(device, [
            Case("square", (big, big, big), "bf16"),
            Case("square", (big, big, big), "fp16"),
            Case("square", (big, big, big), "fp8e4m3"),
            Case("square", (4096, 4096, 4096), "tf32"),
            Case("square", (4096, 4096, 4096), "fp32"),
            Case("odd", (17, 3001, 129), "bf16"),
            Case("gemv", (1, 4096, 4096), "bf16"),
            Case("tall", (65536, 128, 4096), "bf16"),
            Case("batched", (16, 2048, 2048, 128), "bf16"),
        ], lambda case: self.estimate_s(case, device), self.footprint)

    @staticmethod
    def footprint(case: Case) -> float:
        """Device bytes: both operands and two outputs (the first is kept over the repeats), in fp32 at most."""
        batch, m, n, k = _dims(case)
        return 4.0 * batch * (m * k + k * n + 2 * m * n)

    def estimate_s(self, case: Case, device: torch.device) -> float:
        batch, m, n, k = _dims(case)
        rate = gemm_flops(device, case.dtype if case.dtype in ("bf16", "fp16") else "fp32", cpu=5e10)
        return 0.05 + 3 * 2.0 * batch * m * n * k / rate + host_seconds(device, batch * (m + n) * k)

    def run(self, case: Case, device: torch.device, seed: int, repeats: int, faults=None) -> Outcome:
        check_supported(case.dtype, device)
        a_host, b_host = host_inputs(case, seed)
        a, b = a_host.to(device), b_host.to(device)
        if len(case.shape) == 3 and case.dtype != "fp8e4m3":
            a, b = a[0], b[0]  # a plain 2-D matmul reaches the non-batched BLAS path
        previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high" if case.dtype == "tf32" else "highest")
        try:
            result = run_repeats(lambda: matmul(a, b, case.dtype), device, repeats, faults, self.name, case.name)
        finally:
            torch.set_float32_matmul_precision(previous)
        outcome = self.judge_output(case, seed, result)
        batch, m, n, k = _dims(case)
        return throughput(outcome, 2.0 * batch * m * n * k, "TFLOP/s")

    def judge_output(self, case: Case, seed: int, result: Repeats) -> Outcome:
        """Judge a GEMM's repeats against the cached fp64 reference (all rows, or sampled ones)."""
        rows = reference_rows(case, seed)

        def fp64_reference() -> torch.Tensor:
            return reference(*host_inputs(case, seed), rows)

        ref = cached(reference_key(self.name, self.version, case, seed), fp64_reference)
        batch, m, n, k = _dims(case)
        out = result.first.reshape(batch, m, n)
        observed = out if rows is None else out[:, rows.to(out.device), :]
        u_acc, u_out = UNIT_ROUNDOFF[_ACCUMULATE[case.dtype]], UNIT_ROUNDOFF[_OUTPUT[case.dtype]]
        # sqrt(k) growth of accumulated roundoff for random operands over the magnitude
        # |a||b|, plus the output's own rounding of the value, times a safety factor.
        bound = 4.0 * (k**0.5 * u_acc * ref[1] + u_out * ref[0].abs()) + 1e-30
        return judge(result, ref[0], bound, observed=observed)


PROBES = (GemmProbe,)
