"""What every probe shares: seeded inputs, device timing, repeats compared bit for bit, and judging.

A probe supplies a ``compute`` callable (the kernel, on the device) and a reference (fp64 on
the CPU, cached); ``run_repeats`` times the kernel per repeat with the injected faults of the
chip applied, and ``judge`` turns the outputs into an ``Outcome``:

- ``mismatch`` when the first output is outside the dtype- and size-aware error bound of the
  reference, or when a deterministic kernel gave different bytes on its own repeats;
- ``ok`` otherwise. Errors and unsupported dtypes never reach here (see ``sdc.sweep``).

Digests and comparisons stay out of the timed region: timings are the kernel alone. On an
accelerator they are device time, from events recorded on the probe's own stream (host
launch latency is not in them); on the CPU, wall-clock time. A case whose fastest repeat
takes less device time than ``LAUNCH_BOUND_S`` measures launch overhead, not the chip: it
reports no throughput, so it stays out of the slow cohorts.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import torch

from probes.base import Outcome
from sdc.digest import digest
from sdc.node.devices import synchronize  # noqa: F401  (probes import it from here)

DTYPES: dict[str, torch.dtype] = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "tf32": torch.float32,  # storage fp32; the matmul runs in TF32 on tensor cores
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp8e4m3": getattr(torch, "float8_e4m3fn", torch.float32),
    "int32": torch.int32,
}

# Unit roundoff (half an ulp at 1.0) of the arithmetic each case name stands for.
UNIT_ROUNDOFF: dict[str, float] = {
    "fp64": 2.0**-53,
    "fp32": 2.0**-24,
    "tf32": 2.0**-11,
    "bf16": 2.0**-8,
    "fp16": 2.0**-11,
    "fp8e4m3": 2.0**-4,
}


def set_deterministic() -> None:
    """Deterministic kernels where the backend has them; called once per worker process.

    ``warn_only``: an op without a deterministic implementation still runs (it is documented
    in its probe and judged by tolerance) instead of failing the sweep.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    # The kernel-level switch behind torch.use_deterministic_algorithms, which also imports
    # torch._inductor (seconds per worker start) to set a flag only torch.compile reads.
    switch = getattr(torch._C, "_set_deterministic_algorithms", None)
    if switch is not None:
        switch(True, warn_only=True)
    else:  # pragma: no cover - a torch without the private switch
        torch.use_deterministic_algorithms(True, warn_only=True)
    # Filling fresh allocations with NaN costs bandwidth and changes nothing probes read.
    if hasattr(torch.utils, "deterministic"):
        torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.set_float32_matmul_precision("highest")
    # Half-precision GEMMs accumulate in fp32 (cuBLAS may otherwise reduce split-K partial
    # sums in bf16/fp16), which keeps their error bound tight enough to catch mantissa flips.
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False


@contextmanager
def strict_determinism() -> Iterator[None]:
    """Deterministic kernels required, not merely preferred, inside the block.

    Under the sweep's ``warn_only=True`` some fused kernels only warn and run their faster
    non-deterministic variant: on an H200 (torch 2.11) SDPA's memory-efficient and cuDNN
    backward gave 2 or 3 distinct outputs over 3 repeats, a false fault on a healthy chip.
    With ``warn_only=False`` they run deterministically (memory-efficient attention stops
    splitting keys across blocks) or raise, which the sweep records as an error, never a fault.
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch._C._set_deterministic_algorithms(True, warn_only=False)
    try:
        yield
    finally:
        torch._C._set_deterministic_algorithms(enabled, warn_only=warn_only)


def generator(seed: int, *salt: object) -> torch.Generator:
    """A CPU generator for ``seed`` and a salt (case, operand), independent of the device."""
    text = "|".join(str(s) for s in (seed, *salt))
    value = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1
    return torch.Generator().manual_seed(value)


def randn(shape: Sequence[int], seed: int, *salt: object, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal values made on the CPU (fp64, then rounded): identical bytes on every chip."""
    return torch.randn(tuple(shape), generator=generator(seed, *salt), dtype=torch.float64).to(dtype)


LAUNCH_BOUND_S = 50e-6  # below this much device time a case times its launch, not the chip


class DeviceTimer:
    """Times one kernel run: device events on the current stream where the backend has them
    (CUDA, ROCm, XPU and plug-ins exposing ``Event``), else wall clock around a synchronize."""

    def __init__(self, device: torch.device):
        self.device = device
        module = getattr(torch, device.type, None) if device.type != "cpu" else None
        self._module = module if module is not None and hasattr(module, "Event") and hasattr(module, "current_stream") else None
        self.clock = "device" if self._module is not None else "wall"
        self._start: object = None

    def start(self) -> None:
        synchronize(self.device)
        if self._module is not None:
            self._start = self._module.Event(enable_timing=True)
            self._start.record(self._module.current_stream(self.device))
        else:
            self._start = time.perf_counter()

    def stop(self) -> float:
        """Seconds since ``start``: device time of the work queued in between."""
        if self._module is not None:
            end = self._module.Event(enable_timing=True)
            end.record(self._module.current_stream(self.device))
            end.synchronize()
            return float(self._start.elapsed_time(end)) / 1000.0
        synchronize(self.device)
        return time.perf_counter() - float(self._start)


def timed_fault_stretch(faults, probe: str, case: str, elapsed: float) -> float:
    """An injected slowdown (a host-side sleep) added to a repeat's time, whichever clock timed it."""
    if not faults:
        return elapsed
    before = time.perf_counter()
    faults.stretch(probe, case, elapsed)
    return elapsed + (time.perf_counter() - before)


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same bytes (NaNs with the same payload count as equal, -0 differs from +0)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype == torch.bool or a.element_size() not in (1, 2, 4, 8) or a.is_complex():
        return bool(torch.equal(a, b))
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return bool(torch.equal(a.contiguous().view(view), b.contiguous().view(view)))


@dataclass
class Repeats:
    """Outputs of a case's repeats: the first output, one digest per distinct output, timings."""

    first: torch.Tensor
    digests: list[str]
    timings: list[float]
    distinct: int = 1
    extra: dict = field(default_factory=dict)
    clock: str = "wall"  # "device" when timed with device events


class DistinctOutputs:
    """A case's outputs over repeats: the first kept, the others counted by digest.

    Later outputs are compared with the first by ``bit_equal`` (a memcmp, far cheaper than a
    digest); only one that differs is digested, so memory holds the first output only.
    """

    def __init__(self) -> None:
        self.first: Optional[torch.Tensor] = None
        self.digests: list[str] = []

    def add(self, out: torch.Tensor) -> None:
        if self.first is None:
            self.first = out
            self.digests.append(digest(out))
        elif not bit_equal(out, self.first):
            seen = digest(out)
            if seen not in self.digests:
                self.digests.append(seen)


def run_repeats(
    compute: Callable[[], torch.Tensor],
    device: torch.device,
    repeats: int,
    faults=None,
    probe: str = "",
    case: str = "",
) -> Repeats:
    """Run ``compute`` ``repeats`` times, timing each run on the device; compare outputs bit for bit.

    Distinct outputs are counted by ``DistinctOutputs``: memory holds the first output and the
    current one, however many repeats differ.
    """
    outputs = DistinctOutputs()
    timings: list[float] = []
    timer = DeviceTimer(device)
    for repeat in range(max(1, repeats)):
        if faults:
            faults.before(probe, case)
        timer.start()
        out = compute()
        elapsed = timed_fault_stretch(faults, probe, case, timer.stop())
        if faults:
            out = faults.corrupt(out, probe, case, repeat)
        timings.append(elapsed)
        outputs.add(out)
        del out  # a large output must not stay alive through the next repeat
    assert outputs.first is not None
    return Repeats(first=outputs.first, digests=outputs.digests, timings=timings, distinct=len(outputs.digests), clock=timer.clock)


def dot_bound(k: int, case_dtype: str, out_dtype: str | None = None, factor: float = 4.0) -> float:
    """Relative error bound (to be multiplied by sum |a_i b_i|) for a k-term dot product.

    Rounding errors of a k-term sum grow like sqrt(k) for random inputs (and like k in the
    worst case); ``factor`` * sqrt(k) keeps healthy chips clear of it over many seeds while a
    flipped bit above the last few mantissa bits exceeds it. The output's own rounding adds u.
    """
    u = UNIT_ROUNDOFF[case_dtype]
    u_out = UNIT_ROUNDOFF[out_dtype or case_dtype]
    return factor * (math.sqrt(max(k, 1)) * u + u_out)


def judge(
    repeats: Repeats,
    reference: Optional[torch.Tensor],
    bound: Optional[torch.Tensor | float],
    deterministic: bool = True,
    observed: Optional[torch.Tensor] = None,
) -> Outcome:
    """Judge the first output against the reference and the repeats against each other.

    ``bound`` is a scalar or a per-element tensor (absolute). ``observed`` is the part of the
    output the reference covers (e.g. sampled rows of a large GEMM); default: all of it.
    Non-finite values must match the reference exactly (NaN where NaN, the same infinity).
    Reported ``max_abs_err`` and ``error_bound`` are taken at the element closest to its bound.
    """
    outcome = Outcome(
        status="ok",
        repeats=len(repeats.timings),
        distinct_repeat_digests=repeats.distinct,
        timings=list(repeats.timings),
        digest=repeats.digests[0] if deterministic else None,
    )
    outcome.telemetry["timing_clock"] = repeats.clock
    problems = []
    if reference is not None:
        out = (repeats.first if observed is None else observed).detach().to("cpu", torch.float64).reshape(-1)
        ref = reference.detach().to(torch.float64).reshape(-1)
        bound_t = torch.zeros_like(ref) if bound is None else torch.as_tensor(bound, dtype=torch.float64)
        bound_t = bound_t.reshape(-1) if bound_t.numel() == ref.numel() else bound_t.expand_as(ref)
        finite = torch.isfinite(ref)
        same_nonfinite = (torch.isnan(out) & torch.isnan(ref)) | (out == ref)
        bad_nonfinite = (~finite) & ~same_nonfinite
        err = torch.where(finite, (out - ref).abs(), torch.zeros_like(ref))
        err = torch.where(torch.isnan(err) | (finite & ~torch.isfinite(out)), torch.full_like(err, math.inf), err)
        bound_t = torch.where(finite, bound_t, torch.zeros_like(bound_t))
        ratio = torch.where(finite, err / bound_t.clamp_min(1e-300), torch.zeros_like(err))
        worst = int(ratio.argmax()) if ratio.numel() else 0
        outcome.max_abs_err = _finite_or_none(float(err[worst])) if err.numel() else 0.0
        outcome.error_bound = float(bound_t[worst]) if bound_t.numel() else 0.0
        rel = err / ref.abs().clamp_min(1e-300)
        outcome.max_rel_err = _finite_or_none(float(torch.where(finite, rel, torch.zeros_like(rel)).max())) if rel.numel() else 0.0
        outcome.reference_digest = digest(reference)
        if bool(bad_nonfinite.any()):
            index = int(bad_nonfinite.nonzero()[0])
            problems.append(f"element {index} is {float(out[index])}, reference {float(ref[index])}")
        if err.numel() and float(ratio[worst]) > 1.0:
            problems.append(
                f"element {worst}: error {float(err[worst]):.3g} exceeds bound {float(bound_t[worst]):.3g} "
                f"(value {float(out[worst]):.6g}, reference {float(ref[worst]):.6g})"
            )
    if repeats.distinct > 1:
        text = f"{repeats.distinct} distinct outputs over {len(repeats.timings)} repeats"
        if deterministic:
            problems.append(text)
        else:
            outcome.message = f"{text} (nondeterministic op, judged by tolerance)"
    if problems:
        outcome.status = "mismatch"
        outcome.message = "; ".join(problems)
    return outcome


def _finite_or_none(value: float) -> Optional[float]:
    return value if math.isfinite(value) else None


def throughput(outcome: Outcome, amount: float, unit: str) -> Outcome:
    """Set throughput from the fastest repeat: ``amount`` FLOPs (TFLOP/s) or bytes (GB/s)."""
    best = min(outcome.timings) if outcome.timings else 0.0
    if outcome.telemetry.get("timing_clock") == "device" and 0 < best < LAUNCH_BOUND_S:
        note = f"launch-bound: fastest repeat {best * 1e6:.1f} us of device time, under {LAUNCH_BOUND_S * 1e6:.0f} us; no throughput"
        outcome.message = f"{outcome.message}; {note}" if outcome.message else note
        return outcome
    if best > 0:
        scale = 1e12 if unit == "TFLOP/s" else 1e9
        outcome.throughput = amount / best / scale
        outcome.throughput_unit = unit
    return outcome
