"""Device telemetry recorded with each probe result: clocks, temperature, power, throttle reasons.

With it the analysis can tell a throttled card (slow because it is hot or power-capped) from a
slow one. NVML (``pynvml``, from the optional ``nvml`` extra) is the only source today; every
other device reports nothing. The source sits behind a small protocol so the sweep and tests
use a fake where no GPU exists.
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


class TelemetrySource(Protocol):
    def sample(self) -> dict[str, Any]:
        """Current readings as a flat JSON-able dict (empty if unavailable)."""


class NoTelemetry:
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
        if "throttle_mask" in readings:
            readings["throttle_reasons"] = throttle_names(readings["throttle_mask"])
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
