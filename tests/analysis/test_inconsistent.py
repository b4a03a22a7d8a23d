"""Inconsistent chips: nondeterminism on one chip, and replica disagreements in training jobs."""

from dataclasses import replace

from sdc.analysis.config import AnalysisConfig
from sdc.analysis.evidence import JobEvidence
from sdc.analysis.inconsistent import find_nondeterministic, find_replica_disagreements

from .helpers import DAY, build, fleet

CFG = AnalysisConfig()


def test_chip_whose_repeats_disagree_again_and_again_is_inconsistent():
    def flaky(r):
        return replace(r, distinct=2, status="mismatch") if r.case in ("a", "b") and r.sweep % 2 == 0 else r

    ev = build(fleet(30, sweeps=3, overrides={"c05": flaky}))
    found = find_nondeterministic(ev, CFG, now=3 * DAY)
    assert [ev.chip_ids[f.chip] for f in found] == ["c05"]
    assert found[0].k == 4 and found[0].severity == "high"


def test_a_kernel_nondeterministic_on_every_chip_blames_no_chip():
    results = [replace(r, distinct=2, status="mismatch") if r.case == "d" else r for r in fleet(10, sweeps=3)]
    assert find_nondeterministic(build(results), CFG, now=3 * DAY) == []


def _jobs(incidents):
    jobs = JobEvidence()
    n = 0
    for job, step, ranks, diagnosis, suspects in incidents:
        for rank, chip in ranks.items():
            n += 1
            details = {"suspects": suspects} if suspects is not None else {}
            kind = "grad_mismatch" if chip in (suspects or []) or suspects is None else "grad_mismatch"
            jobs.add(f"e{n}", job, step, rank, kind, diagnosis, chip, step * 60.0, details)
    return jobs


def test_chip_blamed_with_different_partners_recurs_and_is_inconsistent():
    jobs = _jobs([
        ("job1", 10, {0: "X", 1: "A"}, "transient", ["X"]),
        ("job2", 50, {0: "B", 3: "X"}, "transient", [3]),  # suspects given as ranks of the job
    ])
    findings, index = find_replica_disagreements(jobs, {}, CFG)
    by = {f.chip: f for f in findings}
    x = by[index["X"]]
    assert x.severity == "high" and x.k == 2 and set(x.details["partners"]) == {"A", "B"}
    names = {code: chip for chip, code in index.items()}
    assert {names[f.chip] for f in findings} == {"X"}


def test_single_transient_disagreement_is_recorded_low_and_persistent_is_high():
    findings, index = find_replica_disagreements(_jobs([("j", 1, {0: "Y", 1: "A"}, "transient", ["Y"])]), {}, CFG)
    assert [(f.severity, f.k) for f in findings] == [("low", 1)]
    findings, index = find_replica_disagreements(_jobs([("j", 1, {0: "Z", 1: "A"}, "persistent", ["Z"])]), {}, CFG)
    assert findings[0].severity == "high" and "replay" in findings[0].summary


def test_two_transients_in_one_job_of_many_replicas_are_one_set_of_partners_not_many():
    # Eight replicas: every rank reports the incident, so one incident has seven partners.
    ranks = {r: ("X" if r == 0 else f"P{r}") for r in range(8)}
    jobs = _jobs([("job1", 10, ranks, "transient", ["X"]), ("job1", 90, ranks, "transient", ["X"])])
    findings, index = find_replica_disagreements(jobs, {}, CFG)
    x = {f.chip: f for f in findings}[index["X"]]
    assert x.severity == "low" and x.k == 2 and x.details["partners"] == [] and len(x.details["common_partners"]) == 7
    # The same chip blamed again in another job, next to other chips: different partners, high.
    other = {r: ("X" if r == 0 else f"Q{r}") for r in range(8)}
    jobs = _jobs([("job1", 10, ranks, "transient", ["X"]), ("job2", 5, other, "transient", ["X"])])
    findings, index = find_replica_disagreements(jobs, {}, CFG)
    assert {f.chip: f for f in findings}[index["X"]].severity == "high"
