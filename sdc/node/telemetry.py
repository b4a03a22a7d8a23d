"""Device telemetry recorded with each probe result: clocks, temperature, power, throttle reasons.

With it the analysis can tell a throttled card (slow because it is hot or power-capped) from a
slow one. NVML (``pynvml``, from the optional ``nvml`` extra) is the only source today; every
other device reports nothing. The source sits behind a small protocol so the sweep and tests
use a fake where no GPU exists.

A sample taken after the case sees an idle GPU (its throttle reasons mostly read
``gpu_idle``), so the throttling *during* the case comes from NVML's cumulative violation
counters instead: read at ``begin()`` and again at ``sample()``, their difference is the time
the case spent power- or thermally-limited, attributed to that case (``throttle_s``, and a
``*_violation`` throttle reason for each limit that bit).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from sdc.node.devices import ChipHandle

log = logging.getLogger(__name__)

# NVML clocks-event (throttle) reason bits → names operators know from nvidia-smi.
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


# NVML performance policies with cumulative violation counters (nvmlPerfPolicyType_t).
VIOLATION_POLICIES = {0: "power", 1: "thermal", 2: "sync_boost", 3: "board_limit", 4: "low_utilization", 5: "reliability"}
# Limits that slow a busy chip; low utilisation and sync boost are not throttling.
THROTTLING = ("power", "thermal", "board_limit", "reliability")


class TelemetrySource(Protocol):
    def begin(self) -> None:
        """Mark the start of a case (cumulative counters are read here)."""

    def sample(self) -> dict[str, Any]:
        """Readings since ``begin`` as a flat JSON-able dict (empty if unavailable)."""


class NoTelemetry:
    def begin(self) -> None:
        return None

    def sample(self) -> dict[str, Any]:
        return {}


def throttle_names(mask: int) -> list[str]:
    return [name for bit, name in THROTTLE_REASONS.items() if mask & bit]


class NvmlTelemetry:
    """Readings of one NVIDIA GPU, found by its UUID (CUDA and NVML indices may differ)."""

    def __init__(self, uuid: str):
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
        self._started: dict[str, int] = {}

    def _violations(self) -> dict[str, int]:
        """Cumulative nanoseconds each limit has held the clocks down since the driver started."""
        out = {}
        for policy, name in VIOLATION_POLICIES.items():
            try:
                out[name] = int(self._nvml.nvmlDeviceGetViolationStatus(self._handle, policy).violationTime)
            except Exception:  # not every GPU or driver keeps every counter
                continue
        return out

    def begin(self) -> None:
        self._started = self._violations()

    def sample(self) -> dict[str, Any]:
        nvml, handle = self._nvml, self._handle
        readings: dict[str, Any] = {}
        for key, read in (
            ("sm_clock_mhz", lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
            ("mem_clock_mhz", lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)),
            ("temperature_c", lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
            ("power_w", lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
            ("throttle_mask", lambda: int(nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle))),
        ):
            try:
                readings[key] = read()
            except Exception:  # one unsupported reading must not lose the others
                continue
        reasons = throttle_names(readings["throttle_mask"]) if "throttle_mask" in readings else []
        if self._started:
            now = self._violations()
            spent = {name: (now[name] - self._started[name]) / 1e9 for name in now if name in self._started}
            readings["throttle_s"] = {name: s for name, s in spent.items() if s > 0}
            # During the case: the counters, not the idle sample after it, say what slowed it.
            reasons = [f"{name}_violation" for name in THROTTLING if spent.get(name, 0) > 0] + [r for r in reasons if r != "gpu_idle"]
            self._started = {}
        if reasons or "throttle_mask" in readings:
            readings["throttle_reasons"] = reasons
        return readings


def telemetry_for(handle: ChipHandle) -> TelemetrySource:
    """NVML readings for an NVIDIA GPU when pynvml is installed; nothing otherwise."""
    if handle.device.type != "cuda" or handle.chip.vendor != "nvidia" or not handle.chip.chip_id.startswith("GPU-"):
        return NoTelemetry()
    try:
        return NvmlTelemetry(handle.chip.chip_id)
    except Exception as exc:  # pynvml missing, driver too old: results simply carry no telemetry
        log.info("no NVML telemetry for %s: %s", handle.name, exc)
        return NoTelemetry()
