"""Verdict records: built from findings, naming their evidence, and round-tripping as JSON lines."""

from dataclasses import replace
from datetime import datetime, timezone

from sdc.analysis.config import AnalysisConfig
from sdc.analysis.inconsistent import find_nondeterministic
from sdc.analysis.wrong import find_wrong
from sdc.analysis.ledger import analyze, to_verdicts
from sdc.records import Verdict, from_json
from sdc.records.schema import json_schema
from sdc.sim.fleet import FleetSpec, SimulatedFleet

from .helpers import DAY, build, fleet

NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)


def test_verdicts_name_their_evidence_and_survive_json_lines():
    fleet = SimulatedFleet(FleetSpec(chips=64, sweeps=4, onset_max=0, faults={"persistent": 1, "slow": 1}), seed=5)
    ev = fleet.evidence()
    findings, chip_ids = analyze(ev, AnalysisConfig(), fleet.round_time(3))
    verdicts = to_verdicts(findings, chip_ids, ev.result_id, "analysis-1", NOW)
    acted_on = {(v.chip_id, v.kind) for v in verdicts if v.severity != "low"}
    assert acted_on == {(c, "wrong" if t["fault"] == "persistent" else "slow") for c, t in fleet.truth().items()}
    # Low verdicts here are the simulated slow node's, recorded against the node.
    assert all(v.details.get("scope") == "node" for v in verdicts if v.severity == "low")
    for v in verdicts:
        assert v.evidence_ids and v.first_seen <= v.last_seen and v.k <= v.n and v.chip_id in v.summary
        back = from_json(v.to_json())
        assert isinstance(back, Verdict) and back == v
    line = verdicts[0].to_json()
    assert '"record":"verdict"' in line and f'"kind":"{verdicts[0].kind}"' in line
    assert json_schema(Verdict)["properties"]["record"] == {"const": "verdict"}


def test_old_evidence_falls_out_of_the_window_of_recent_sweeps():
    def flaky(r):
        return replace(r, distinct=2, status="mismatch") if r.sweep < 2 and r.case in ("a", "b") else r

    ev = build(fleet(40, sweeps=6, overrides={"c05": flaky}))
    found = [f for f in find_nondeterministic(ev, AnalysisConfig(), now=6 * DAY) if ev.chip_ids[f.chip] == "c05"]
    assert found and found[0].k == 4 and found[0].n == 24  # all six sweeps count, unweighted
    assert find_nondeterministic(ev, AnalysisConfig(evidence_window_sweeps=4), now=6 * DAY) == []  # out of the window


def test_the_same_faults_weigh_the_same_at_weekly_and_daily_cadence():
    # Wrong in 3 results spread over ten sweeps: as strong a case a week apart as a day apart.
    def intermittent(r):
        return replace(r, digest="flip", distinct=2, status="mismatch") if r.sweep in (1, 5, 9) and r.case == "a" else r

    results = fleet(40, sweeps=10, overrides={"c11": intermittent})
    daily = build(results)
    weekly = build(results)
    weekly.sweep_time = weekly.sweep_time * 7  # the same sweeps, a week apart
    d = find_wrong(daily, AnalysisConfig(), now=10 * DAY)
    w = find_wrong(weekly, AnalysisConfig(), now=70 * DAY)
    assert [(daily.chip_ids[f.chip], f.k, f.n, f.p_value) for f in d] == [(weekly.chip_ids[f.chip], f.k, f.n, f.p_value) for f in w]
    assert [daily.chip_ids[f.chip] for f in d] == ["c11"]
