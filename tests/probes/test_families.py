"""Probe-level behaviour beyond the end-to-end sweep (tests/sweep/test_cli.py covers every family):
injected slowdown and nondeterminism, reference caching, and error bounds over many seeds."""

import torch

from probes.base import Case
from probes.registry import all_probes
from sdc.faults import parse_faults
from sdc.node.devices import discover
from sdc.sweep import SweepOptions, run_sweep

SLOWDOWN = 20.0


def _sweep(chips, probes, faults, repeats=3):
    records = []
    summary = run_sweep(
        discover(chips), probes, "quick", records.extend,
        options=SweepOptions(faults=parse_faults(faults, environ={}), isolate=False, repeats=repeats),
    )
    return summary, [r for r in records if r.KIND == "probe_result"]


def test_injected_slowdown_shows_in_timings_and_nothing_else():
    class OddOnly(type(all_probes()["gemm"])):
        def cases(self, suite):
            return [c for c in super().cases(suite) if c.name == "odd"]

    summary, results = _sweep("cpu:0,cpu:1", [OddOnly()], [f"cpu:1:slowdown:factor={SLOWDOWN}"], repeats=5)
    healthy, slowed = (r for r in results)
    # The fault sleeps (factor - 1) times each measured run: the ratio is ~20, 3 leaves room for noise.
    assert min(slowed.timings) > 3 * min(healthy.timings)
    assert slowed.throughput < healthy.throughput / 3
    assert slowed.status == "ok" and slowed.digest == healthy.digest and summary.exit_code == 0


def test_injected_nondeterminism_shows_as_distinct_repeat_digests():
    class TwoOps(type(all_probes()["elementwise"])):
        def cases(self, suite):
            return super().cases(suite)[:2]

    summary, results = _sweep("cpu:0,cpu:1", [TwoOps()], ["cpu:1:nondeterminism:rate=1"])
    healthy = [r for r in results if r.chip_id.endswith(":0")]
    wobbly = [r for r in results if r.chip_id.endswith(":1")]
    assert all(r.distinct_repeat_digests == 1 and r.status == "ok" for r in healthy)
    assert all(r.distinct_repeat_digests == 3 and r.status == "mismatch" for r in wobbly)
    assert all("distinct outputs over 3 repeats" in r.message for r in wobbly)
    # The first repeat is the chip's answer, still within bounds: only the repeats give it away.
    assert [r.digest for r in wobbly] == [r.digest for r in healthy]
    assert summary.chips[1].exit_code == 1


def test_reference_is_cached_per_case_and_seed(tmp_path, monkeypatch):
    from probes import reference
    from probes.gemm import GemmProbe

    monkeypatch.setenv("SDC_REFERENCE_CACHE", str(tmp_path))
    reference.clear_memory()
    probe, case = GemmProbe(), Case("odd", (17, 301, 129), "fp32")
    probe.run(case, torch.device("cpu"), 7, 1)
    probe.run(case, torch.device("cpu"), 8, 1)
    assert len(list(tmp_path.glob("*.pt"))) == 2, "one reference per seed, on disk for other workers"
    reference.clear_memory()
    again = probe.run(case, torch.device("cpu"), 7, 1)  # from disk
    assert again.status == "ok" and len(list(tmp_path.glob("*.pt"))) == 2


def test_healthy_gemm_stays_within_bounds_over_many_seeds():
    from probes.gemm import GemmProbe

    probe = GemmProbe()
    worst = 0.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a virtual CPU chip runs
    try:
        for seed in range(10):
            for case in [c for c in probe.cases("quick") if c.dtype in ("fp32", "bf16")]:
                outcome = probe.run(case, torch.device("cpu"), seed, 1)
                assert outcome.status == "ok", (seed, case, outcome.message)
                worst = max(worst, outcome.max_abs_err / outcome.error_bound)
    finally:
        torch.set_num_threads(threads)
    assert worst < 0.5, "bounds should leave a margin on healthy chips"
