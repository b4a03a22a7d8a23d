"""The ledger: run every analysis over the evidence and turn findings into ``Verdict`` records.

One verdict per chip and kind, pointing at the evidence behind it (result ids, or job event
ids), with a sentence a person can read. Pure: the caller passes the time ``now`` (for ageing)
and stores what comes back.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Sequence

import numpy as np

from sdc.analysis.config import AnalysisConfig
from sdc.analysis.evidence import Evidence, JobEvidence
from sdc.analysis.findings import SEVERITY_RANK, Finding
from sdc.analysis.inconsistent import find_nondeterministic, find_replica_disagreements
from sdc.analysis.precision import without_stack_bound_breaks
from sdc.analysis.slow import SlowFloor, slow_analysis
from sdc.analysis.unreliable import find_unreliable
from sdc.analysis.wrong import find_wrong
from sdc.records import Verdict, new_id

MAX_EVIDENCE_IDS = 100  # a verdict names its evidence; beyond this the count in k says the rest


def analyze(
    ev: Evidence, cfg: AnalysisConfig, now: float, jobs: JobEvidence | None = None
) -> tuple[list[Finding], list[str]]:
    """All findings over the evidence; returns them with the chip id of every chip code.

    Chips seen only in training jobs get codes after the fleet's own. Cohorts whose every
    chip breaks the fp64 bound identically are a finding about the stack (``sdc precision``),
    so they are taken out of chip blame first.
    """
    findings, chip_ids, _ = analyze_fleet(ev, cfg, now, jobs)
    return findings, chip_ids


def analyze_fleet(
    ev: Evidence, cfg: AnalysisConfig, now: float, jobs: JobEvidence | None = None
) -> tuple[list[Finding], list[str], list[SlowFloor]]:
    """``analyze``, and per chip model the slowdown its chip-to-chip spread lets the slow test find."""
    ev = without_stack_bound_breaks(ev)
    slow, floors = slow_analysis(ev, cfg, now)
    findings = find_wrong(ev, cfg, now) + slow + find_nondeterministic(ev, cfg, now) + find_unreliable(ev, cfg, now)
    chip_ids = list(ev.chip_ids)
    if jobs is not None and len(jobs):
        index = {c: i for i, c in enumerate(chip_ids)}
        job_findings, index = find_replica_disagreements(jobs, index, cfg)
        chip_ids = [None] * len(index)
        for chip, code in index.items():
            chip_ids[code] = chip
        findings += _merge_inconsistent(findings, job_findings)
    return findings, chip_ids, floors


def _merge_inconsistent(existing: list[Finding], from_jobs: list[Finding]) -> list[Finding]:
    """A chip with both kinds of inconsistency keeps one verdict: the repeats one, with the jobs attached."""
    by_chip = {f.chip: f for f in existing if f.kind == "inconsistent"}
    extra = []
    for f in from_jobs:
        other = by_chip.get(f.chip)
        if other is None:
            extra.append(f)
            continue
        other.event_ids = f.event_ids
        other.summary += "; it also " + f.summary
        other.details["jobs"] = f.details
        if SEVERITY_RANK[f.severity] > SEVERITY_RANK[other.severity]:
            other.severity = f.severity
    return extra


def to_time(value: float | None) -> datetime | None:
    if value is None or not np.isfinite(value):
        return None
    return datetime.fromtimestamp(float(value), tz=timezone.utc)


def to_verdicts(
    findings: Sequence[Finding],
    chip_ids: Sequence[str],
    result_ids: np.ndarray,
    analysis_id: str,
    created_at: datetime,
) -> list[Verdict]:
    """Verdict records for findings; ``result_ids`` are the Evidence ``result_id`` column."""
    verdicts = []
    for f in sorted(findings, key=lambda f: (-SEVERITY_RANK[f.severity], f.kind, chip_ids[f.chip])):
        ids = [r.decode() if isinstance(r, bytes) else str(r) for r in result_ids[f.rows[:MAX_EVIDENCE_IDS]]]
        ids += f.event_ids[: max(0, MAX_EVIDENCE_IDS - len(ids))]
        verdicts.append(
            Verdict(
                verdict_id=new_id(),
                analysis_id=analysis_id,
                chip_id=chip_ids[f.chip],
                kind=f.kind,
                severity=f.severity,
                k=int(f.k),
                n=int(f.n),
                summary=f"{chip_ids[f.chip]} {f.summary}",
                created_at=created_at,
                statistic=_finite(f.statistic),
                p_value=_finite(f.p_value),
                score=_finite(f.score),
                first_seen=to_time(f.first_seen),
                last_seen=to_time(f.last_seen),
                evidence_ids=ids,
                details={k: _jsonable(v) for k, v in f.details.items()},
            )
        )
    return verdicts


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return _finite(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
