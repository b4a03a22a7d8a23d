"""Telemetry: NVML's violation counters attribute throttling to the case that ran, not to the
idle moment after it. A fake pynvml stands in for the driver (no GPU here)."""

import sys
import types

from sdc.node.telemetry import NvmlTelemetry


class FakeNvml(types.ModuleType):
    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 0, 1, 0

    def __init__(self):
        super().__init__("pynvml")
        self.violation = {0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0}

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return uuid

    def nvmlDeviceGetClockInfo(self, handle, which):
        return 1980

    def nvmlDeviceGetTemperature(self, handle, which):
        return 61

    def nvmlDeviceGetPowerUsage(self, handle):
        return 90_000

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        return 0x1  # after the case the GPU is idle

    def nvmlDeviceGetViolationStatus(self, handle, policy):
        return types.SimpleNamespace(referenceTime=0, violationTime=self.violation[policy])


def test_thermal_throttling_during_the_case_is_reported_though_the_gpu_is_idle_after_it(monkeypatch):
    nvml = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    source = NvmlTelemetry("GPU-0")
    nvml.violation[1] = 5_000_000_000  # thermal time before the case: not this case's
    source.begin()
    nvml.violation[1] += 1_500_000_000  # 1.5 s thermally limited while the case ran
    nvml.violation[4] += 9_000_000_000  # low utilisation is not throttling
    readings = source.sample()
    assert readings["throttle_reasons"] == ["thermal_violation"]
    assert readings["throttle_s"] == {"thermal": 1.5, "low_utilization": 9.0}
    assert readings["temperature_c"] == 61 and readings["power_w"] == 90.0
    # A case with no violation: the idle reading after it is not reported as a throttle.
    source.begin()
    assert source.sample()["throttle_reasons"] == []
