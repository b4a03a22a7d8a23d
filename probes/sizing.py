"""How large a probe's cases may be on a device: from a short measured calibration, not its type.

Every accelerator used to get H200-sized cases, so on a slower chip (an emulated or young
PrivateUse1 backend) 8192^3 GEMMs ran past the watchdog and a quick sweep took 20 minutes.
Here each device is timed once per process on three small kernels that grow until a run
takes a few milliseconds (so launch overhead does not dominate on a fast chip):

- ``gemm_flops(device, dtype)``: FLOP/s of a square matmul in that dtype;
- ``copy_bandwidth(device)``: bytes/s of a device-to-device copy (read + write);
- ``transfer_bandwidth(device)``: bytes/s of a host-to-device copy.

A probe adds an accelerator-sized case only when its estimate at the measured speed fits
``CASE_ALLOWANCE_S`` (a tenth of the default 120 s watchdog), and its ``estimate_s`` — what
``--budget`` spends — uses the same figures. Rates are rounded down to a power of two so that
healthy chips of one model, measured a few percent apart, plan the same cases (cohorts compare
like with like). Virtual CPU chips (``cpu:N``) are test chips: they keep fixed nominal rates and
only the base cases, so CPU test sweeps do not depend on the speed of the machine.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch

CASE_ALLOWANCE_S = 12.0
# Nominal rates of a virtual CPU chip (one of several sharing the host's cores).
CPU_GEMM_FLOPS = 5e10
CPU_COPY_BANDWIDTH = 3e9
CPU_TRANSFER_BANDWIDTH = 5e9

HOST_ELEMENTS_PER_S = 1e8  # seeded fp64 normals made on the host, then rounded
_MIN_RUN_S = 0.02  # grow the calibration kernel until one run takes this long
_measured: dict[tuple[str, str], float] = {}


def is_virtual_cpu(device: torch.device) -> bool:
    return device.type == "cpu"


def fits(seconds: float) -> bool:
    """Whether a case estimated at ``seconds`` (all repeats) may join the plan."""
    return seconds <= CASE_ALLOWANCE_S


def sized(device: torch.device, candidates: list, estimate: Callable[[object], float]) -> list:
    """The accelerator-sized ``candidates`` that fit this device; none on a virtual CPU chip."""
    if is_virtual_cpu(device):
        return []
    return [case for case in candidates if fits(estimate(case))]


def gemm_flops(device: torch.device, dtype: str = "fp32", cpu: float = CPU_GEMM_FLOPS) -> float:
    """Measured FLOP/s of a square matmul in ``dtype`` (fp32, bf16, fp16) on ``device``.

    ``cpu``: the nominal rate a probe assumes for a virtual CPU chip.
    """
    if is_virtual_cpu(device):
        return cpu
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype, torch.float32)

    def run(n: int) -> tuple[Callable[[], object], float]:
        a = torch.ones((n, n), dtype=torch_dtype, device=device)
        return (lambda: a @ a), 2.0 * n**3

    return _cached(device, f"gemm-{dtype}", lambda: _grow(run, device, 512, 8192))


def copy_bandwidth(device: torch.device, cpu: float = CPU_COPY_BANDWIDTH) -> float:
    """Measured bytes/s of copying device memory to device memory (bytes read + written)."""
    if is_virtual_cpu(device):
        return cpu

    def run(n: int) -> tuple[Callable[[], object], float]:
        src = torch.ones(n * 1024, dtype=torch.int32, device=device)
        dst = torch.empty_like(src)
        return (lambda: dst.copy_(src)), 2.0 * 4 * n * 1024

    return _cached(device, "copy", lambda: _grow(run, device, 4096, 1 << 17))


def transfer_bandwidth(device: torch.device, cpu: float = CPU_TRANSFER_BANDWIDTH) -> float:
    """Measured bytes/s of a host-to-device copy."""
    if is_virtual_cpu(device):
        return cpu

    def run(n: int) -> tuple[Callable[[], object], float]:
        host = torch.ones(n * 1024, dtype=torch.int32)
        return (lambda: host.to(device)), 4.0 * n * 1024

    return _cached(device, "transfer", lambda: _grow(run, device, 4096, 1 << 17))


def host_seconds(device: torch.device, elements: float) -> float:
    """Host-side seconds a case of ``elements`` input values costs off the CPU: seeded fp64
    inputs, the move to the device and back, the fp64 reference (cached after the first chip)."""
    if is_virtual_cpu(device):
        return 0.0
    return elements * 4 / transfer_bandwidth(device) * 2 + elements / HOST_ELEMENTS_PER_S


def _cached(device: torch.device, what: str, measure: Callable[[], float]) -> float:
    key = (str(device), what)
    if key not in _measured:
        try:
            rate = measure()
        except Exception:  # a dtype or op the device lacks: size as if it were slow
            rate = 1e6
        # Down to a power of two: chips a few percent apart plan the same cases.
        _measured[key] = 2.0 ** math.floor(math.log2(max(rate, 1.0)))
    return _measured[key]


def _grow(make: Callable[[int], tuple[Callable[[], object], float]], device: torch.device, start: int, stop: int) -> float:
    """Work per second of the kernel ``make(n)`` builds, doubling n until a run is long enough.

    The best rate over the sizes tried: small sizes measure launch overhead, and a single
    slow sample (a shared host, a clock ramping up) lowers one size only.
    """
    from probes.harness import synchronize

    n, best_rate = start, 0.0
    while True:
        kernel, work = make(n)
        kernel()  # warm-up: first-use costs (allocation, kernel selection) are not speed
        synchronize(device)
        best = math.inf
        for _ in range(3):
            began = time.perf_counter()
            kernel()
            synchronize(device)
            best = min(best, time.perf_counter() - began)
        best_rate = max(best_rate, work / max(best, 1e-9))
        if best >= _MIN_RUN_S or n >= stop:
            return best_rate
        n *= 2
