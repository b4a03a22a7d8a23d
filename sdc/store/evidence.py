"""Evidence in and out of the store for the analysis: columns, job events, quarantine history.

Reading two million probe results must stay well under 30 s and 2 GB, so results are
streamed in partitions straight from a Core query (no ORM objects) and encoded batch by
batch into compact integer codes (``sdc.analysis.evidence.EvidenceBuilder``); the time of a
result is its sweep's start, so no per-row datetime is parsed.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Iterable, Sequence

from sqlalchemy import Engine, select

from sdc.analysis.evidence import Evidence, EvidenceBuilder, JobEvidence
from sdc.records import QuarantineEvent
from sdc.store.models import ChipRow, JobEventRow, ProbeResultRow, QuarantineEventRow, SweepRow

PARTITION = 50_000


def load_evidence(engine: Engine, since: datetime | None = None) -> Evidence:
    """Probe results of complete sweeps (observed at or after ``since``) as columns."""
    builder = EvidenceBuilder()
    c, s, r = ChipRow.__table__, SweepRow.__table__, ProbeResultRow.__table__
    with engine.connect() as connection:
        builder.add_chips(connection.execute(select(c.c.chip_id, c.c.host, c.c.model)))
        sweeps = select(s.c.sweep_id, s.c.started_at).where(s.c.status == "complete")
        builder.add_sweeps((sweep_id, started.timestamp()) for sweep_id, started in connection.execute(sweeps))
        query = (
            select(
                r.c.chip_id, r.c.sweep_id, r.c.probe, r.c.probe_version, r.c.case_key, r.c.seed, r.c.stack_hash,
                r.c.status, r.c.digest, r.c.repeats, r.c.distinct_repeat_digests, r.c.throughput, r.c.result_id,
            )
            .join(s, s.c.sweep_id == r.c.sweep_id)
            .where(s.c.status == "complete")
        )
        if since is not None:
            query = query.where(r.c.observed_at >= since)
        result = connection.execution_options(stream_results=True, yield_per=PARTITION).execute(query)
        for rows in result.partitions(PARTITION):
            builder.add_results(*zip(*rows))
    return builder.build()


def load_job_events(engine: Engine, since: datetime | None = None) -> JobEvidence:
    """Training-job events that report a replica disagreement (kinds ending in 'mismatch')."""
    t = JobEventRow.__table__
    query = select(t.c.event_id, t.c.job_id, t.c.step, t.c.rank, t.c.kind, t.c.diagnosis, t.c.chip_id, t.c.observed_at, t.c.details)
    query = query.where(t.c.kind.like("%mismatch")).where(t.c.diagnosis.in_(("persistent", "transient", "unattributed")))
    if since is not None:
        query = query.where(t.c.observed_at >= since)
    jobs = JobEvidence()
    with engine.connect() as connection:
        for event_id, job_id, step, rank, kind, diagnosis, chip_id, at, details in connection.execute(query):
            jobs.add(event_id, job_id, step, rank, kind, diagnosis, chip_id, at.timestamp(), details)
    return jobs


def quarantine_events(engine: Engine, chip_id: str | None = None) -> list[QuarantineEvent]:
    """Every quarantine transition (of one chip, if given), oldest first."""
    t = QuarantineEventRow.__table__
    names = [col.name for col in t.columns]
    query = select(*t.columns).order_by(t.c.at, t.c.event_id)
    if chip_id is not None:
        query = query.where(t.c.chip_id == chip_id)
    with engine.connect() as connection:
        return [QuarantineEvent(**dict(zip(names, row))) for row in connection.execute(query)]


def fleet_size(engine: Engine) -> int:
    from sqlalchemy import func

    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(ChipRow.__table__)).scalar_one())


def throttle_reasons(engine: Engine, result_ids: Sequence[str]) -> Counter:
    """Throttle reasons recorded in the telemetry of these results (``throttle_reasons`` lists)."""
    t = ProbeResultRow.__table__
    reasons: Counter = Counter()
    ids = list(result_ids)
    with engine.connect() as connection:
        for start in range(0, len(ids), 500):
            query = select(t.c.telemetry).where(t.c.result_id.in_(ids[start : start + 500]))
            for (telemetry,) in connection.execute(query):
                for reason in _reasons(telemetry):
                    reasons[reason] += 1
    return reasons


def _reasons(telemetry) -> Iterable[str]:
    if not isinstance(telemetry, dict):
        return ()
    value = telemetry.get("throttle_reasons") or telemetry.get("throttle") or ()
    if isinstance(value, str):
        return (value,)
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else ()
