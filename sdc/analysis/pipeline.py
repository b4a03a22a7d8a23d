"""From the store to verdicts: load the evidence as columns, run the pure analyses, name the
stored results each finding rests on. Reads only; ``sdc.quarantine.pipeline`` stores what it
returns and applies the quarantine policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Sequence

from sqlalchemy import Engine

from sdc.analysis.config import AnalysisConfig
from sdc.analysis.evidence import Evidence, JobEvidence
from sdc.analysis.findings import Finding
from sdc.analysis.ledger import MAX_EVIDENCE_IDS, analyze_fleet, to_verdicts
from sdc.analysis.load import (
    load_evidence,
    load_job_events,
    result_ids_for,
    throttle_reasons,
)
from sdc.analysis.slow import SlowFloor
from sdc.records import Verdict


@dataclass
class AnalysisResult:
    """The verdicts of one analysis and the evidence they came from."""

    verdicts: list[Verdict]
    evidence: Evidence
    jobs: JobEvidence
    chip_ids: Sequence[str]  # every chip the analysis knows, including chips seen only in jobs
    slow_floors: list[SlowFloor] = field(default_factory=list)  # per chip model: what the slow test resolves


def run_analysis(
    engine: Engine, cfg: AnalysisConfig, since: datetime | None, now: datetime, analysis_id: str
) -> AnalysisResult:
    """Verdicts from the evidence observed at or after ``since``, stamped ``now``."""
    ev = load_evidence(engine, since)
    jobs = load_job_events(engine, since)
    findings, chip_ids, floors = analyze_fleet(ev, cfg, now.timestamp(), jobs)
    for f in findings:  # name the evidence: result ids stay in the store until a verdict needs them
        if f.rows.size:
            f.event_ids = result_ids_for(engine, ev, f.rows[:MAX_EVIDENCE_IDS]) + f.event_ids
            f.rows = f.rows[:0]
    _explain_slow(engine, findings)
    verdicts = to_verdicts(findings, chip_ids, ev.result_id, analysis_id, now)
    return AnalysisResult(verdicts, ev, jobs, chip_ids, floors)


def _explain_slow(engine, findings: list[Finding]) -> None:
    """Show recorded throttle reasons as the likely cause of slowness (never to hide a chip)."""
    for f in findings:
        ids = [i for i in f.event_ids]
        if f.kind != "slow" or not ids:
            continue
        reasons = throttle_reasons(engine, ids)
        if reasons:
            top = ", ".join(f"{reason} ({count} of {len(ids)} slow results)" for reason, count in reasons.most_common(3))
            f.details["throttle_reasons"] = dict(reasons)
            f.summary += f"; likely cause: throttling recorded: {top}"
