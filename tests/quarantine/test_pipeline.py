"""From the store to verdicts and quarantine events, on SQLite and PostgreSQL."""

from datetime import timedelta
from pathlib import Path

import pytest

from sdc.analysis.load import load_evidence, load_job_events
from sdc.config import ConfigError, Settings
from sdc.exitcodes import ExitCode
from sdc.quarantine.pipeline import analyze_store
from sdc.quarantine.states import state_names
from sdc.records import JobEvent, utcnow
from sdc.sim.fleet import FleetSpec, SimulatedFleet
from sdc.store.reader import iter_records, quarantine_events


def settings(store, **analysis):
    return Settings(database_url=store.url, data_dir=Path("."), outbox_dir=Path("."), tables={"analysis": analysis})


def load_fleet(store, **spec):
    spec = {"chips": 48, "sweeps": 6, "onset_max": 2, "incomplete_rate": 0.1, **spec}
    fleet = SimulatedFleet(FleetSpec(**spec), seed=7)
    shift = utcnow().timestamp() - 3600 - float(fleet.sweep_time.max())
    store.write(list(fleet.records(time_shift=shift)))
    return fleet


def test_loaded_evidence_is_the_complete_sweeps_only(store):
    fleet = load_fleet(store)
    ev = load_evidence(store.engine())
    direct = fleet.evidence()
    assert ev.n_results == int((direct.status <= 3).sum()) > 0  # skips are not loaded; errors and timeouts are (unreliable)
    assert int(ev.evidence_mask().sum()) == int(direct.evidence_mask().sum())  # only judged results are evidence
    assert set(ev.sweep_ids) == {s for s, done in zip(fleet.sweep_ids, fleet.sweep_complete) if done}


def test_analysis_stores_verdicts_and_quarantines_the_planted_chips(store):
    fleet = load_fleet(store, faults={"persistent": 1, "slow": 1, "nondeterministic": 1})
    truth = set(fleet.truth())
    config = settings(store, breaker_share=0.1)  # 3 of 48 chips are broken here
    dry = analyze_store(store, config, dry_run=True)
    assert {e.chip_id for e in dry.transitions if e.to_state == "quarantined"} == truth
    assert state_names(quarantine_events(store.engine())) == {} and not list(iter_records(store.engine(), ["verdict"]))

    report = analyze_store(store, config)
    assert report.exit_code == ExitCode.FAULT
    assert {v.chip_id for v in report.verdicts} == truth
    assert state_names(quarantine_events(store.engine())) == {chip: "quarantined" for chip in truth}
    stored = list(iter_records(store.engine(), ["verdict"]))
    assert len(stored) == len(report.verdicts) and all(v.evidence_ids for v in stored)
    persistent = next(c for c, t in fleet.truth().items() if t["fault"] == "persistent")
    wrong = next(v for v in stored if v.kind == "wrong" and v.chip_id == persistent)
    assert wrong.severity == "critical" and wrong.first_seen is not None and wrong.k >= 1

    again = analyze_store(store, config)  # quarantined chips stay put; nothing new happens
    assert again.transitions == [] and again.exit_code == ExitCode.HEALTHY


def test_throttle_reasons_are_shown_as_the_likely_cause_not_used_to_hide(store):
    fleet = load_fleet(store, throttled_share=1.0, throttle_prob=1.0, throttle_depth=(0.0, 0.0), faults={"slow": 1})
    report = analyze_store(store, settings(store), dry_run=True)
    (slow,) = [v for v in report.verdicts if v.kind == "slow"]
    assert slow.chip_id in fleet.truth()
    assert "likely cause: throttling recorded" in slow.summary and slow.details["throttle_reasons"]


def test_job_disagreements_make_a_recurring_chip_inconsistent(store):
    load_fleet(store)
    now = utcnow()
    events = []
    for n, (job, partner) in enumerate((("job-a", "GPU-0007-000001"), ("job-b", "GPU-0007-000002"))):
        for rank, chip in enumerate(("GPU-0007-000010", partner)):
            events.append(JobEvent(event_id=f"{job}-{rank}", job_id=job, step=100 + n, rank=rank, world_size=2, host="h",
                                   kind="grad_mismatch", diagnosis="transient", observed_at=now - timedelta(minutes=5),
                                   chip_id=chip, details={"suspects": [0]}))
    store.write(events)
    assert len(load_job_events(store.engine())) == 4
    report = analyze_store(store, settings(store), dry_run=True)
    verdicts = {v.chip_id: v for v in report.verdicts}
    assert verdicts["GPU-0007-000010"].kind == "inconsistent"
    # Every event that names the chip as the suspect is evidence, the partners' reports too.
    assert set(verdicts["GPU-0007-000010"].evidence_ids) == {"job-a-0", "job-a-1", "job-b-0", "job-b-1"}
    assert "GPU-0007-000001" not in verdicts


def test_circuit_breaker_holds_back_a_mass_quarantine(store):
    load_fleet(store, faults={"persistent": 5})
    report = analyze_store(store, settings(store, breaker_share=0.05))
    assert report.breaker_tripped and "CIRCUIT BREAKER" in report.breaker_message
    assert {e.to_state for e in report.transitions} == {"suspect"}
    assert set(state_names(quarantine_events(store.engine())).values()) == {"suspect"}
    assert len(quarantine_events(store.engine())) == 5


def test_bad_analysis_config_is_refused_by_name(store):
    with pytest.raises(ConfigError, match="fdr"):
        analyze_store(store, settings(store, fdr="often"))


def _newer_sweep(store, at):
    """Copy the latest complete sweep of every host as a new sweep at ``at`` (new ids, same outputs):
    the chips behave now as they did then."""
    from dataclasses import replace

    from sdc.records import new_id

    records = list(iter_records(store.engine(), ["sweep", "probe_result"]))
    sweeps = [r for r in records if type(r).__name__ == "Sweep" and r.status == "complete"]
    latest = {}
    for s in sweeps:
        if s.host not in latest or s.started_at > latest[s.host].started_at:
            latest[s.host] = s
    ids = {s.sweep_id: new_id() for s in latest.values()}
    out = [replace(s, sweep_id=ids[s.sweep_id], started_at=at, finished_at=at + timedelta(minutes=5)) for s in latest.values()]
    out += [replace(r, result_id=new_id(), sweep_id=ids[r.sweep_id], observed_at=at)
            for r in records if type(r).__name__ == "ProbeResult" and r.sweep_id in ids]
    store.write(out)


def test_a_release_sticks_until_a_newer_sweep_judges_the_chip(store):
    from sdc.quarantine.policy import release

    fleet = load_fleet(store, faults={"persistent": 1})
    (bad,) = fleet.truth()
    analyze_store(store, settings(store))
    assert state_names(quarantine_events(store.engine()))[bad] == "quarantined"
    released_at = utcnow()
    store.write([release({bad: "quarantined"}, bad, "ana", "card reseated", released_at)])

    again = analyze_store(store, settings(store))  # no new sweep: the old evidence was already judged
    assert again.transitions == [] and again.exit_code == ExitCode.HEALTHY
    assert state_names(quarantine_events(store.engine()))[bad] == "released"

    _newer_sweep(store, released_at + timedelta(seconds=1))  # still wrong after the release
    failed = analyze_store(store, settings(store))
    assert [(e.chip_id, e.from_state, e.to_state) for e in failed.transitions] == [(bad, "released", "quarantined")]
    assert failed.transitions[0].reason.startswith("failed probation: wrong (critical)")


def test_after_a_breaker_trip_the_old_evidence_quarantines_nothing(store):
    load_fleet(store, faults={"persistent": 5})
    tripped = analyze_store(store, settings(store, breaker_share=0.05))
    assert tripped.breaker_tripped and all(e.details.get("breaker") for e in tripped.transitions)
    assert tripped.exit_code == ExitCode.UNKNOWN  # a mass alarm is no fault found
    # The operator looked and raised the share (or fixed the probe): the held chips stay suspect ...
    relaxed = analyze_store(store, settings(store, breaker_share=0.5))
    assert relaxed.transitions == [] and not relaxed.breaker_tripped
    assert set(state_names(quarantine_events(store.engine())).values()) == {"suspect"}


def test_a_release_stamped_in_the_future_does_not_exempt_the_chip_from_newer_sweeps(store):
    from datetime import datetime, timezone

    from sdc.quarantine.policy import release

    fleet = load_fleet(store, faults={"persistent": 1})
    (bad,) = fleet.truth()
    analyze_store(store, settings(store))
    store.write([release({bad: "quarantined"}, bad, "ana", "clock says 2099", datetime(2099, 1, 1, tzinfo=timezone.utc))])
    assert state_names(quarantine_events(store.engine()))[bad] == "released"
    _newer_sweep(store, utcnow() + timedelta(minutes=1))  # later than the analysis's clock, whatever the load
    again = analyze_store(store, settings(store))
    assert [(e.chip_id, e.to_state) for e in again.transitions] == [(bad, "quarantined")]
    assert state_names(quarantine_events(store.engine()))[bad] == "quarantined"  # the store's order, not the 2099 stamp
