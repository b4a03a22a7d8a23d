"""Wrong chips: the cohort majority outvotes a consistently wrong chip; transients and the
probe's own bound problems are not blamed on a chip; errors are never faults."""

from dataclasses import replace

from sdc.analysis.config import AnalysisConfig
from sdc.analysis.wrong import find_wrong

from .helpers import DAY, build, fleet

CFG = AnalysisConfig()


def by_chip(findings, ev):
    return {ev.chip_ids[f.chip]: f for f in findings}


def test_consistently_wrong_chip_is_outvoted_and_critical_once_a_fresh_run_reproduces_it():
    results = fleet(6, overrides={"c03": lambda r: replace(r, digest="bad-" + r.case) if r.case == "b" else r})
    retest = replace(next(r for r in results if r.chip == "c03" and r.case == "b"))  # the sweep's retest
    ev = build(results + [retest])
    found = by_chip(find_wrong(ev, CFG, now=DAY), ev)
    assert set(found) == {"c03"}
    f = found["c03"]
    assert f.severity == "critical" and f.k == 2 and f.n == 5
    assert f.details["confirmed_by_repeats"] == 2 and "gemm/b" in f.summary


def test_one_wrong_result_its_retest_does_not_reproduce_is_not_critical():
    # A healthy divergence (a fallback kernel): repeats agree, a fresh process gives the majority.
    results = fleet(40, overrides={"c03": lambda r: replace(r, digest="other-" + r.case) if r.case == "b" else r})
    retest = replace(next(r for r in results if r.chip == "c03" and r.case == "b"), digest="good-b-0")
    found = by_chip(find_wrong(build(results + [retest]), CFG, now=DAY), build(results + [retest]))
    assert all(f.severity != "critical" for f in found.values())


def test_fp64_mismatch_shared_by_the_cohort_is_the_probe_not_the_chip():
    # Every chip breaks the bound identically on case 'a' (a too-tight bound): nobody is wrong.
    results = fleet(5, overrides={f"c{i:02d}": (lambda r: replace(r, status="mismatch") if r.case == "a" else r) for i in range(5)})
    assert find_wrong(build(results), CFG, now=DAY) == []


def test_fp64_mismatch_on_a_chip_alone_in_its_cohort_counts():
    results = [replace(r, status="mismatch") if r.case == "c" else r for r in fleet(1)]
    ev = build(results)
    assert find_wrong(ev, CFG, now=DAY) == []  # seen once, never reproduced: evidence, not a verdict
    again = build(results + [next(r for r in results if r.case == "c")])  # reproduced by the retest
    found = by_chip(find_wrong(again, CFG, now=DAY), again)
    assert found["c00"].severity == "critical" and found["c00"].details["against_fp64"] == 2


def test_no_majority_of_two_other_chips_means_no_vote():
    results = fleet(2, overrides={"c01": lambda r: replace(r, digest="other")})
    assert find_wrong(build(results), CFG, now=DAY) == []


def test_one_transient_upset_on_a_healthy_chip_is_not_a_verdict():
    # One run of three went wrong once: the digest differs but repeats disagree.
    def upset(r):
        return replace(r, digest="flipped", distinct=2, status="mismatch") if (r.sweep, r.case) == (3, "a") else r

    ev = build(fleet(40, sweeps=5, overrides={"c07": upset}))
    assert find_wrong(ev, CFG, now=5 * DAY) == []


def test_repeated_unconfirmed_wrong_results_accumulate_into_a_verdict():
    def intermittent(r):
        return replace(r, digest="flip", distinct=2, status="mismatch") if r.sweep in (2, 6, 9) and r.case == "a" else r

    ev = build(fleet(40, sweeps=10, overrides={"c11": intermittent}))
    found = by_chip(find_wrong(ev, CFG, now=10 * DAY), ev)
    assert set(found) == {"c11"}
    assert found["c11"].severity == "high" and found["c11"].k == 3 and found["c11"].p_value < 1e-6


def test_errors_timeouts_and_skips_are_never_faults():
    statuses = ["error", "timeout", "skipped"]

    def broken(r):
        return replace(r, status=statuses[hash(r.case) % 3], digest=None, throughput=None, distinct=0, repeats=0)

    ev = build(fleet(6, sweeps=3, overrides={"c02": broken}))
    assert find_wrong(ev, CFG, now=3 * DAY) == []
