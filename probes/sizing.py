"""How large a probe's cases may be on a device: from a short measured calibration, not its type.

Every accelerator used to get H200-sized cases, so on a slower chip (an emulated or young
PrivateUse1 backend) 8192^3 GEMMs ran past the watchdog and a quick sweep took 20 minutes.
Here each device type is timed once per process (on the first of its devices asked about, so
every chip of a node plans the same cases) on three small kernels that grow until a run
takes a few milliseconds (so launch overhead does not dominate on a fast chip):

- ``gemm_flops(device, dtype)``: FLOP/s of a square matmul in that dtype;
- ``stream_bandwidth(device)``: bytes/s of an elementwise op over device memory (read + write);
- ``transfer_bandwidth(device)``: bytes/s of a host-to-device copy.

A probe adds an accelerator-sized case only when it needs at most half the device's memory
(where torch exposes it) and its estimate at the measured speed fits
``CASE_ALLOWANCE_S`` (a twelfth of the default 120 s watchdog: the large cases are
far larger than the calibration kernels, and a host shared by several chips slows each), and its ``estimate_s`` — what
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

CASE_ALLOWANCE_S = 10.0
MEMORY_SHARE = 0.5  # of the device's memory one case may need (the rest: the runtime, other tenants)
# Nominal rates of a virtual CPU chip (one of several sharing the host's cores).
CPU_GEMM_FLOPS = 5e10
CPU_STREAM_BANDWIDTH = 3e9
CPU_TRANSFER_BANDWIDTH = 5e9

HOST_ELEMENTS_PER_S: float | None = None  # measured (host_rate) unless set
HOST_PASSES = 10  # fp64 passes a case makes over its values on the host
_MIN_RUN_S = 0.05  # grow the calibration kernel until one run takes this long
_measured: dict[tuple[str, str], float] = {}


def is_virtual_cpu(device: torch.device) -> bool:
    return device.type == "cpu"


def fits(seconds: float) -> bool:
    """Whether a case estimated at ``seconds`` (all repeats) may join the plan."""
    return seconds <= CASE_ALLOWANCE_S


def sized(
    device: torch.device,
    candidates: list,
    estimate: Callable[[object], float],
    footprint: Callable[[object], float] | None = None,
) -> list:
    """The accelerator-sized ``candidates`` that fit this device; none on a virtual CPU chip.

    A case fits when its estimate fits the time allowance and, where the probe says how many
    bytes of device memory it needs (``footprint``) and torch says how much the device has,
    when that is at most ``MEMORY_SHARE`` of the device's memory.
    """
    if is_virtual_cpu(device):
        return []
    from sdc.node.devices import device_memory

    total = device_memory(device)[1]
    return [
        case
        for case in candidates
        if fits(estimate(case)) and (footprint is None or total is None or footprint(case) <= MEMORY_SHARE * total)
    ]


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


def stream_bandwidth(device: torch.device, cpu: float = CPU_STREAM_BANDWIDTH) -> float:
    """Measured bytes/s (read + written) of one elementwise op over device memory.

    An op, not a copy: a backend that runs ops through a fallback, or launches them slowly,
    is that much slower for the memory and norms probes than its memcpy suggests.
    """
    if is_virtual_cpu(device):
        return cpu

    def run(n: int) -> tuple[Callable[[], object], float]:
        src = torch.ones(n * 1024, dtype=torch.int32, device=device)
        dst = torch.empty_like(src)
        return (lambda: torch.bitwise_xor(src, 1, out=dst)), 2.0 * 4 * n * 1024

    return _cached(device, "stream", lambda: _grow(run, device, 4096, 1 << 17))


def transfer_bandwidth(device: torch.device, cpu: float = CPU_TRANSFER_BANDWIDTH) -> float:
    """Measured bytes/s of a host-to-device copy."""
    if is_virtual_cpu(device):
        return cpu

    def run(n: int) -> tuple[Callable[[], object], float]:
        host = torch.ones(n * 1024, dtype=torch.int32)
        return (lambda: host.to(device)), 4.0 * n * 1024

    return _cached(device, "transfer", lambda: _grow(run, device, 4096, 1 << 17))


def host_seconds(device: torch.device, elements: float) -> float:
    """Host-side seconds a case of ``elements`` values costs off the CPU: seeded fp64 inputs,
    the move to the device and back, the fp64 reference and the judging of the output there —
    about ``HOST_PASSES`` passes over fp64 values at this host's measured rate."""
    if is_virtual_cpu(device):
        return 0.0
    return elements * 4 / transfer_bandwidth(device) * 2 + elements * HOST_PASSES / host_rate()


def host_rate() -> float:
    """Seeded fp64 normals per second this host makes (the unit of a probe's host-side work)."""
    if HOST_ELEMENTS_PER_S is not None:
        return HOST_ELEMENTS_PER_S
    generator = torch.Generator().manual_seed(0)

    def run(n: int) -> tuple[Callable[[], object], float]:
        return (lambda: torch.randn(n * 1024, dtype=torch.float64, generator=generator)), float(n * 1024)

    return _cached(torch.device("cpu"), "host", lambda: _grow(run, torch.device("cpu"), 256, 1 << 14))


def _cached(device: torch.device, what: str, measure: Callable[[], float]) -> float:
    # Per device type, measured on the first device asked about: the chips of a node plan the
    # same cases (a chip that is slow must be measured slow, not given smaller cases).
    key = (device.type, what)
    if key not in _measured:
        try:
            rate = measure()
        except Exception:  # a dtype or op the device lacks: size as if it were slow
            rate = 1e6
        # Down to a power of two: chips a few percent apart plan the same cases.
        _measured[key] = 2.0 ** math.floor(math.log2(max(rate, 1.0)))
    return _measured[key]


def _grow(make: Callable[[int], tuple[Callable[[], object], float]], device: torch.device, start: int, stop: int) -> float:
    """Work per second of the kernel ``make(n)`` builds, doubling n until one run is long enough.

    The rate at the largest size tried: small sizes measure launch overhead and fit in
    caches, so they flatter a device; the large cases this sizes are larger still.
    """
    from probes.harness import synchronize

    n = start
    while True:
        kernel, work = make(n)
        kernel()  # warm-up: first-use costs (allocation, kernel selection) are not speed
        synchronize(device)
        best = math.inf
        for _ in range(2):
            began = time.perf_counter()
            kernel()
            synchronize(device)
            best = min(best, time.perf_counter() - began)
        if best >= _MIN_RUN_S or n >= stop:
            return work / max(best, 1e-9)
        n *= 2
