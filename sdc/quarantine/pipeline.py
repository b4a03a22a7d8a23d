"""One analysis run, from the store to stored verdicts and quarantine transitions: what
``sdc analyze`` and the agent run.

It sits above both the analysis and the quarantine policy, so it lives here: it takes the
analysis lock, gets verdicts from ``sdc.analysis.pipeline``, applies the pure policy
(``policy``, ``breaker``) to the chips' current states, and stores what they return and a
row for the run itself in ``analyses`` (nothing on a dry run): the run that found nothing is
what tells readers an older verdict is no longer current (``sdc.quarantine.latest``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from sdc.analysis.evidence import Evidence
from sdc.analysis.pipeline import run_analysis
from sdc.config import Settings
from sdc.exitcodes import ExitCode
from sdc.quarantine import config as quarantine_config
from sdc.quarantine.breaker import recent_quarantine_count
from sdc.quarantine.policy import ChipHistory, apply_policy
from sdc.quarantine.states import QUARANTINED, SUSPECT, current_states, is_breaker_hold
from sdc.records import QuarantineEvent, Verdict, new_id, utcnow


@dataclass
class AnalysisReport:
    """What one analysis found and did."""

    analysis_id: str
    created_at: datetime
    verdicts: list[Verdict] = field(default_factory=list)
    transitions: list[QuarantineEvent] = field(default_factory=list)
    breaker_tripped: bool = False
    breaker_message: str = ""
    dry_run: bool = False
    chips: int = 0
    results: int = 0
    job_events: int = 0
    states: dict[str, str] = field(default_factory=dict)  # after this analysis
    slow_floors: list = field(default_factory=list)  # sdc.analysis.slow.SlowFloor per chip model

    @property
    def exit_code(self) -> ExitCode:
        """1 if a chip became quarantined or (on its own evidence) suspect; 2 if only the breaker
        spoke (its held chips are no finding yet); else 0."""
        if any(e.to_state == QUARANTINED or (e.to_state == SUSPECT and not e.details.get("breaker")) for e in self.transitions):
            return ExitCode.FAULT
        if self.breaker_tripped:
            return ExitCode.UNKNOWN
        return ExitCode.HEALTHY

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "analysis_id": self.analysis_id,
            "created_at": self.created_at.isoformat(),
            "dry_run": self.dry_run,
            "chips": self.chips,
            "results": self.results,
            "job_events": self.job_events,
            "breaker_tripped": self.breaker_tripped,
            "breaker_message": self.breaker_message,
            "slow_floors": [f.to_json_dict() for f in self.slow_floors],
            "verdicts": [v.to_json_dict() for v in self.verdicts],
            "transitions": [e.to_json_dict() for e in self.transitions],
            "exit_code": int(self.exit_code),
        }


def analyze_store(
    store, settings: Settings, since: datetime | None = None, dry_run: bool = False, lock_timeout: float = 600.0
) -> AnalysisReport:
    """Load evidence, analyse it, store verdicts and apply the quarantine policy.

    Args:
        store: an ``sdc.store.Store``.
        settings: thresholds come from its ``[analysis]`` table.
        since: only evidence observed at or after this time (default: ``max_age_days`` ago).
        dry_run: compute and return everything, store nothing.
        lock_timeout: seconds to wait for another analysis of the same store to finish
            (``sdc.store.lock``); then ``AnalysisBusy``. A dry run stores nothing and does not wait.
    """
    if dry_run:
        return _analyze(store, settings, since, dry_run)
    from sdc.store.lock import analysis_lock

    with analysis_lock(store.engine(), lock_timeout):
        return _analyze(store, settings, since, dry_run)


def _analyze(store, settings: Settings, since: datetime | None, dry_run: bool) -> AnalysisReport:
    from sdc.analysis.load import fleet_size
    from sdc.store.reader import quarantine_events

    analysis_cfg, cfg = quarantine_config.load(settings.section("analysis"))
    now = utcnow()
    if since is None and analysis_cfg.max_age_days > 0:
        since = now - timedelta(days=analysis_cfg.max_age_days)
    engine = store.engine()
    report = AnalysisReport(analysis_id=new_id(), created_at=now, dry_run=dry_run)
    result = run_analysis(engine, analysis_cfg, since, now, report.analysis_id)
    ev = result.evidence
    report.chips, report.results, report.job_events = ev.n_chips, ev.n_results, len(result.jobs)
    report.verdicts = result.verdicts
    report.slow_floors = result.slow_floors

    # The fleet is every chip we have evidence of: chips seen only in training jobs count too.
    history_events = quarantine_events(engine)
    current = current_states(history_events)
    states = {chip: s.state for chip, s in current.items()}
    # A transition stamped in the future (a wrong clock) must not make every later sweep "old".
    since_at = {chip: min(s.since, now) if s.since else s.since for chip, s in current.items()}
    held = {chip for chip, s in current.items() if s.state == SUSPECT and is_breaker_hold(s.event.details)}
    history = {chip: ChipHistory(at, sweeps, chip in held) for chip, at, sweeps in _sweeps_since(ev, since_at)}
    fleet = max(fleet_size(engine), len(result.chip_ids))
    recent = recent_quarantine_count(history_events, now, cfg)
    outcome = apply_policy(states, report.verdicts, fleet, recent, now, cfg, history)
    report.transitions = outcome.events
    report.breaker_tripped = outcome.breaker_tripped
    report.breaker_message = outcome.message
    for e in outcome.events:
        states[e.chip_id] = e.to_state
    report.states = states
    if not dry_run:
        if report.verdicts or report.transitions:
            store.deliver([*report.verdicts, *report.transitions])
        _record_run(engine, report)
    return report


def _record_run(engine, report: AnalysisReport) -> None:
    """Store the run after its verdicts, so it never names an analysis whose verdicts are missing.

    The analysis holds the store's lock, so the database was reachable a moment ago; if the
    verdicts went to the outbox all the same, this insert fails like they did and the error
    reaches the operator (exit 2), and the replayed verdicts are then the latest run.
    """
    from sdc.store.models import AnalysisRow

    with engine.begin() as conn:
        conn.execute(
            AnalysisRow.__table__.insert().values(
                analysis_id=report.analysis_id, created_at=report.created_at, chips=report.chips,
                results=report.results, verdicts=len(report.verdicts), breaker_tripped=report.breaker_tripped,
            )
        )


def _sweeps_since(ev: Evidence, since_at: dict[str, datetime]):
    """For each chip with a state: how many complete sweeps tested it after its last transition."""
    if not since_at or ev.n_results == 0:
        for chip, at in since_at.items():
            yield chip, at, 0
        return
    index = {c: i for i, c in enumerate(ev.chip_ids)}
    cutoff = np.full(ev.n_chips, np.inf)
    for chip, at in since_at.items():
        if chip in index:
            cutoff[index[chip]] = at.timestamp()
    n_sweeps = ev.sweep_ids.shape[0]
    pairs = np.unique(ev.chip.astype(np.int64) * n_sweeps + ev.sweep)
    pair_chip = pairs // n_sweeps
    later = ev.sweep_time[pairs % n_sweeps] > cutoff[pair_chip]
    counts = np.bincount(pair_chip[later], minlength=ev.n_chips)
    for chip, at in since_at.items():
        code = index.get(chip)
        yield chip, at, 0 if code is None else int(counts[code])
