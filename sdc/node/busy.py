"""Is this node's hardware busy? The agent defers a sweep rather than compete with real work.

Through NVML (``nvidia-ml-py``) where it is installed and an NVIDIA driver answers: a chip is
busy when a compute process other than this one runs on it, or its utilisation is at or
above a threshold. Elsewhere (no NVML: CPU-only nodes, ROCm, plug-in backends) the documented
fallback is the 1-minute load average per CPU core: at or above a threshold, the node is busy.
The decisions are pure functions; reading NVML and the load sit at the edge.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence


@dataclass(frozen=True)
class BusyPolicy:
    utilization_percent: float = 10.0  # NVML: a chip this busy is in use
    load_per_core: float = 0.9  # fallback: 1-minute load average per core


def nvml_reason(
    processes: Mapping[int, Sequence[int]], utilization: Mapping[int, float], own_pid: int, policy: BusyPolicy
) -> str | None:
    """Why the chips are busy (or None), from NVML's per-chip process ids and utilisation."""
    for index in sorted(processes):
        others = [pid for pid in processes[index] if pid != own_pid]
        if others:
            return f"chip {index} runs {len(others)} other process(es) (pid {others[0]})"
    for index in sorted(utilization):
        if utilization[index] >= policy.utilization_percent:
            return f"chip {index} is {utilization[index]:.0f}% utilised (threshold {policy.utilization_percent:.0f}%)"
    return None


def load_reason(load_1min: float, cores: int, policy: BusyPolicy) -> str | None:
    """Why the node is busy (or None), from the load average: the fallback without NVML."""
    per_core = load_1min / max(cores, 1)
    if per_core >= policy.load_per_core:
        return f"load average {load_1min:.2f} on {cores} cores ({per_core:.2f} per core, threshold {policy.load_per_core:.2f})"
    return None


class NvmlUnavailable(RuntimeError):
    pass


def read_nvml() -> tuple[dict[int, list[int]], dict[int, float]]:
    """Per chip index: compute process ids and GPU utilisation percent. Raises NvmlUnavailable."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:
        raise NvmlUnavailable(str(exc) or type(exc).__name__) from None
    try:
        processes, utilization = {}, {}
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            processes[index] = [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)]
            utilization[index] = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        return processes, utilization
    finally:
        pynvml.nvmlShutdown()


def busy_reason(
    policy: BusyPolicy,
    nvml: Callable[[], tuple[dict[int, list[int]], dict[int, float]]] = read_nvml,
    loadavg: Callable[[], tuple[float, float, float]] = os.getloadavg,
    cores: Callable[[], int | None] = os.cpu_count,
) -> str | None:
    """Why a sweep should wait now, or None; NVML first, the load average where NVML is absent."""
    try:
        processes, utilization = nvml()
    except NvmlUnavailable:
        return load_reason(loadavg()[0], cores() or 1, policy)
    return nvml_reason(processes, utilization, os.getpid(), policy)
