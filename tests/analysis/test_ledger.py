"""Verdict records: built from findings, naming their evidence, and round-tripping as JSON lines."""

from dataclasses import replace
from datetime import datetime, timezone

from sdc.analysis.config import AnalysisConfig
from sdc.analysis.inconsistent import find_nondeterministic
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
    assert {(v.chip_id, v.kind) for v in verdicts} == {(c, "wrong" if t["fault"] == "persistent" else "slow") for c, t in fleet.truth().items()}
    for v in verdicts:
        assert v.evidence_ids and v.first_seen <= v.last_seen and v.k <= v.n and v.chip_id in v.summary
        back = from_json(v.to_json())
        assert isinstance(back, Verdict) and back == v
    line = verdicts[0].to_json()
    assert '"record":"verdict"' in line and f'"kind":"{verdicts[0].kind}"' in line
    assert json_schema(Verdict)["properties"]["record"] == {"const": "verdict"}


def test_ageing_makes_old_evidence_weigh_less():
    def flaky(r):
        return replace(r, distinct=2, status="mismatch") if r.sweep < 2 and r.case in ("a", "b") else r

    ev = build(fleet(40, sweeps=4, overrides={"c05": flaky}))
    cfg = AnalysisConfig(half_life_days=2.0)
    fresh = [f for f in find_nondeterministic(ev, cfg, now=4 * DAY) if ev.chip_ids[f.chip] == "c05"]
    assert fresh and fresh[0].statistic < fresh[0].k  # already aged a little
    assert find_nondeterministic(ev, cfg, now=60 * DAY) == []  # a month later it no longer convicts
