"""Unreliable chips: errors and timeouts tested against the cohort, never counted as wrong."""

from dataclasses import replace

from sdc.analysis.config import AnalysisConfig
from sdc.analysis.ledger import analyze

from .helpers import DAY, build, fleet

CFG = AnalysisConfig()
CASES = tuple("abcdefgh")


def verdicts(ev, now):
    found, ids = analyze(ev, CFG, now)
    return {(ids[f.chip], f.kind): f for f in found}


def test_a_chip_that_hangs_or_crashes_in_every_sweep_is_unreliable_not_wrong():
    def broken(r):
        if r.case in ("a", "c", "e"):
            return replace(r, status="timeout" if r.case == "a" else "error", digest=None, throughput=None)
        return r

    ev = build(fleet(40, sweeps=3, cases=CASES, overrides={"c07": broken}))
    found = verdicts(ev, 3 * DAY)
    assert set(found) == {("c07", "unreliable")}  # never "wrong"
    f = found[("c07", "unreliable")]
    assert f.severity == "high" and f.k == 9 and f.details["timeouts"] == 3 and "never counted as a wrong answer" in f.summary


def test_one_error_in_one_sweep_is_not_a_verdict():
    def once(r):
        return replace(r, status="error", digest=None, throughput=None) if (r.sweep, r.case) == (1, "b") else r

    assert verdicts(build(fleet(40, sweeps=3, cases=CASES, overrides={"c07": once})), 3 * DAY) == {}


def test_a_case_that_fails_on_every_chip_blames_none():
    # A missing kernel in this stack: every chip errors on case 'd'; the cohort expects it.
    results = [replace(r, status="error", digest=None, throughput=None) if r.case == "d" else r
               for r in fleet(40, sweeps=3, cases=CASES)]
    assert verdicts(build(results), 3 * DAY) == {}
