"""The burn probe keeps statistics over the whole burn, not its first iterations."""

import torch

from probes.base import Case
from probes.burn import INTERVALS, BurnProbe, Thinned, burn_statistics


def test_a_chip_that_slows_late_in_the_burn_shows_it_in_the_statistics():
    # Canned iteration times: 1 ms for the first half of the burn, 3 ms (hot) for the second.
    intervals = [Thinned(4096) for _ in range(INTERVALS)]
    for i in range(10_000):
        intervals[i * INTERVALS // 10_000].add(0.001 if i < 5_000 else 0.003)
    stats = burn_statistics(intervals)
    assert stats["interval_median_s"][:5] == [0.001] * 5 and stats["interval_median_s"][5:] == [0.003] * 5
    assert stats["slowest_interval"] >= 5 and stats["last_vs_first"] == 3.0
    assert sum(stats["iterations_per_interval"]) == 10_000


def test_thinned_keeps_a_bounded_even_sample_of_any_stream():
    t = Thinned(100)
    for i in range(100_000):
        t.add(float(i))
    assert len(t.values) < 100 and t.values[0] == 0.0 and t.values[-1] > 90_000


def test_a_real_burn_reports_sustained_throughput_and_timings_over_the_whole_run():
    outcome = BurnProbe().run(Case("gemm", (32, 32, 32), "fp32", {"duration_s": 1.0}), torch.device("cpu"), seed=0, repeats=1)
    stats = outcome.telemetry["burn"]
    assert outcome.status == "ok" and sum(stats["iterations_per_interval"]) == outcome.repeats
    assert len(stats["interval_median_s"]) == INTERVALS and len(outcome.timings) <= 2000
    slowest = stats["interval_median_s"][stats["slowest_interval"]]
    assert abs(outcome.throughput - 2 * 32**3 / slowest / 1e12) < 1e-9  # the sustained figure
    assert "sustained" in outcome.message and "last interval" in outcome.message


def test_a_case_timed_on_the_device_under_the_launch_floor_reports_no_throughput():
    from probes.base import Outcome
    from probes.harness import LAUNCH_BOUND_S, throughput

    quick = throughput(Outcome("ok", timings=[LAUNCH_BOUND_S / 3] * 3, telemetry={"timing_clock": "device"}), 1e9, "TFLOP/s")
    assert quick.throughput is None and "launch-bound" in quick.message  # left out of the slow cohorts
    long = throughput(Outcome("ok", timings=[LAUNCH_BOUND_S * 20] * 3, telemetry={"timing_clock": "device"}), 1e9, "TFLOP/s")
    assert long.throughput is not None and long.throughput > 0
    cpu = throughput(Outcome("ok", timings=[LAUNCH_BOUND_S / 3] * 3, telemetry={"timing_clock": "wall"}), 1e9, "TFLOP/s")
    assert cpu.throughput is not None  # a CPU has no launch to time


def test_transfer_and_memory_probes_take_their_time_from_the_device_timer(monkeypatch):
    """The copies and the memory walk are timed by the device timer (device events on the
    probe's stream where the backend has them), not by the host's clock around them."""
    import torch

    import probes.memory as memory
    import probes.transfer as transfer

    class EventTimer:  # what a backend with device events reports: 1 ms a run, whatever the host did
        clock = "device"

        def __init__(self, device):
            pass

        def start(self):
            pass

        def stop(self):
            return 1e-3

    monkeypatch.setattr(transfer, "DeviceTimer", EventTimer)
    monkeypatch.setattr(memory, "DeviceTimer", EventTimer)
    cpu = torch.device("cpu")
    probe = transfer.TransferProbe()
    case = probe.cases("quick")[0]
    out = probe.run(case, cpu, seed=0, repeats=2)
    assert out.status == "ok" and out.telemetry["timing_clock"] == "device"
    assert out.timings == [2e-3, 2e-3]  # host-to-device plus device-to-host, each 1 ms of device time
    mem = memory.MemoryProbe()
    out = mem.run(mem.cases("quick")[0], cpu, seed=0, repeats=2)
    assert out.status == "ok" and out.timings == [1e-3, 1e-3] and out.telemetry["timing_clock"] == "device"
