"""Every probe family on virtual CPU chips: deterministic, and each injected fault shows as it should.

One in-process sweep of the quick suite over three chips serves every test here (a sweep
takes seconds): cpu:0 healthy, cpu:1 with a bit flip in every output, cpu:2 slowed down on
GEMMs and nondeterministic on elementwise ops.
"""

import pytest
import torch

from probes.base import Case
from probes.registry import all_probes
from sdc.devices import discover
from sdc.faults import parse_faults
from sdc.sweep import SweepOptions, run_sweep

FAMILIES = {"gemm", "attention", "conv", "norms", "elementwise", "memory", "transfer", "collective", "burn"}
SLOWDOWN = 20.0


@pytest.fixture(scope="module")
def sweep():
    faults = parse_faults(
        ["cpu:1:bitflip:rate=1", f"cpu:2:slowdown:factor={SLOWDOWN},probe=gemm,case=odd", "cpu:2:nondeterminism:probe=elementwise"],
        environ={},
    )
    records = []
    probes = [p for p in all_probes().values() if p.name != "burn"]
    summary = run_sweep(
        discover("cpu:0,cpu:1,cpu:2"), probes, "quick", records.extend,
        options=SweepOptions(faults=faults, isolate=False, repeats=3),
    )
    results = [r for r in records if r.KIND == "probe_result"]
    by_chip = {}
    for r in results:
        by_chip.setdefault(r.chip_id.rsplit(":", 2)[-2] + ":" + r.chip_id.rsplit(":", 1)[-1], []).append(r)
    return summary, by_chip


def _key(result):
    return (result.probe, repr(sorted(result.case.items(), key=str)))


def test_every_family_is_registered_and_runs_in_the_quick_suite_on_cpu(sweep):
    assert FAMILIES <= set(all_probes())
    _, by_chip = sweep
    ran = {r.probe for r in by_chip["cpu:0"] if r.status == "ok"}
    assert ran == FAMILIES - {"burn"}


def test_healthy_chip_is_ok_and_bit_identical_over_repeats(sweep):
    summary, by_chip = sweep
    assert summary.chips[0].exit_code == 0, summary.chips[0].failures
    for r in by_chip["cpu:0"]:
        assert r.status in ("ok", "skipped"), (r.probe, r.case, r.message)
        if r.status == "ok":
            assert r.repeats == 3 and r.distinct_repeat_digests == 1, (r.probe, r.case)
            assert r.digest and r.throughput and r.throughput > 0


def test_digests_are_identical_across_virtual_chips(sweep):
    _, by_chip = sweep
    healthy = {_key(r): r.digest for r in by_chip["cpu:0"] if r.status == "ok"}
    slowed = {_key(r): r.digest for r in by_chip["cpu:2"] if r.status in ("ok", "mismatch")}
    # cpu:2's first repeats are untouched by its faults, so its digests equal cpu:0's.
    assert healthy and healthy == slowed


def test_bit_flips_are_mismatches_naming_the_case(sweep):
    summary, by_chip = sweep
    assert summary.chips[1].exit_code == 1
    judged = [r for r in by_chip["cpu:1"] if r.status != "skipped"]
    assert judged and all(r.status == "mismatch" for r in judged), [(r.probe, r.status) for r in judged]
    assert any(f.startswith("gemm/square fp32: mismatch") for f in summary.chips[1].failures)
    healthy = {_key(r): r.digest for r in by_chip["cpu:0"] if r.status == "ok"}
    assert all(healthy[_key(r)] != r.digest for r in judged), "a corrupted output has its own digest"


def test_memory_faults_report_failing_address_ranges(sweep):
    _, by_chip = sweep
    (memory,) = [r for r in by_chip["cpu:1"] if r.probe == "memory"]
    assert "failing words" in memory.message and "byte ranges" in memory.message and "[0x" in memory.message


def test_injected_slowdown_shows_in_timings(sweep):
    _, by_chip = sweep
    def gemm_time(chip):
        return sum(sum(r.timings) for r in by_chip[chip] if r.probe == "gemm" and r.case["name"] == "odd")
    # The fault sleeps (factor - 1) times each measured run, so the ratio is ~20; 3 leaves room for noise.
    assert gemm_time("cpu:2") > 3 * gemm_time("cpu:0")


def test_injected_nondeterminism_shows_as_distinct_repeat_digests(sweep):
    summary, by_chip = sweep
    elementwise = [r for r in by_chip["cpu:2"] if r.probe == "elementwise"]
    assert elementwise and all(r.distinct_repeat_digests > 1 and r.status == "mismatch" for r in elementwise)
    assert all("distinct outputs over 3 repeats" in r.message for r in elementwise)
    others = [r for r in by_chip["cpu:2"] if r.probe not in ("elementwise",) and r.status != "skipped"]
    assert all(r.status == "ok" for r in others)


def test_unsupported_dtypes_are_skipped_not_mismatches(sweep):
    _, by_chip = sweep
    skipped = [r for r in by_chip["cpu:0"] if r.status == "skipped"]
    assert {r.case["dtype"] for r in skipped} == {"tf32", "fp8e4m3"}
    assert all("not supported here" in r.message for r in skipped)


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
    for seed in range(12):
        for case in [c for c in probe.cases("quick") if c.dtype == "fp32"]:
            outcome = probe.run(case, torch.device("cpu"), seed, 1)
            assert outcome.status == "ok", (seed, case, outcome.message)
            worst = max(worst, outcome.max_abs_err / outcome.error_bound)
    assert worst < 0.5, "bounds should leave a margin on healthy chips"
