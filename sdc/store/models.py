"""Database tables for the evidence ledger (SQLAlchemy 2 typed ORM).

One table per record kind, columns named as the record fields. Times are stored as UTC;
JSON fields use the generic JSON type (JSONB-free so SQLite and PostgreSQL share one schema).
``case_key`` is derived (canonical JSON of ``case``) and indexed because every cohort query
groups by it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC on the way in and out, on every backend.

    SQLite has no time zone type and hands back naive values; we store UTC and re-attach it.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON, list[float]: JSON}


class ChipRow(Base):
    __tablename__ = "chips"

    chip_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), index=True)
    index: Mapped[int] = mapped_column(Integer)
    vendor: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(255))
    memory_bytes: Mapped[int] = mapped_column(BigInteger)
    stack: Mapped[dict[str, Any]]
    stack_hash: Mapped[str] = mapped_column(String(64))
    observed_at: Mapped[datetime]


class SweepRow(Base):
    __tablename__ = "sweeps"

    sweep_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), index=True)
    suite: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), index=True)
    sdc_version: Mapped[str] = mapped_column(String(64))
    finished_at: Mapped[Optional[datetime]]
    pid: Mapped[Optional[int]] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="")


class ProbeResultRow(Base):
    __tablename__ = "probe_results"
    __table_args__ = (Index("ix_probe_results_cohort", "probe", "probe_version", "case_key", "seed"),)

    result_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sweep_id: Mapped[str] = mapped_column(ForeignKey("sweeps.sweep_id"), index=True)
    chip_id: Mapped[str] = mapped_column(ForeignKey("chips.chip_id"), index=True)
    probe: Mapped[str] = mapped_column(String(128))
    probe_version: Mapped[int] = mapped_column(Integer)
    case: Mapped[dict[str, Any]]
    case_key: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    stack_hash: Mapped[str] = mapped_column(String(64))
    repeats: Mapped[int] = mapped_column(Integer)
    distinct_repeat_digests: Mapped[int] = mapped_column(Integer)
    timings: Mapped[list[float]]
    observed_at: Mapped[datetime] = mapped_column(index=True)
    digest: Mapped[Optional[str]] = mapped_column(String(128))
    reference_digest: Mapped[Optional[str]] = mapped_column(String(128))
    max_abs_err: Mapped[Optional[float]] = mapped_column(Float)
    max_rel_err: Mapped[Optional[float]] = mapped_column(Float)
    error_bound: Mapped[Optional[float]] = mapped_column(Float)
    throughput: Mapped[Optional[float]] = mapped_column(Float)
    throughput_unit: Mapped[Optional[str]] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    telemetry: Mapped[dict[str, Any]]


class JobEventRow(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_step", "job_id", "step"),)

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(255))
    step: Mapped[int] = mapped_column(BigInteger)
    rank: Mapped[int] = mapped_column(Integer)
    world_size: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(64))
    diagnosis: Mapped[str] = mapped_column(String(16))
    observed_at: Mapped[datetime] = mapped_column(index=True)
    # Not a foreign key: a job may run on chips no sweep has seen yet.
    chip_id: Mapped[Optional[str]] = mapped_column(String(128), index=True)
    details: Mapped[dict[str, Any]]


class VerdictRow(Base):
    __tablename__ = "verdicts"

    verdict_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    analysis_id: Mapped[str] = mapped_column(String(64), index=True)
    chip_id: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    k: Mapped[int] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer)
    summary: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(index=True)
    statistic: Mapped[Optional[float]] = mapped_column(Float)
    p_value: Mapped[Optional[float]] = mapped_column(Float)
    score: Mapped[Optional[float]] = mapped_column(Float)
    first_seen: Mapped[Optional[datetime]]
    last_seen: Mapped[Optional[datetime]]
    evidence_ids: Mapped[list[str]]
    details: Mapped[dict[str, Any]]


class QuarantineEventRow(Base):
    __tablename__ = "quarantine_events"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    chip_id: Mapped[str] = mapped_column(String(128), index=True)
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(index=True)
    verdict_id: Mapped[Optional[str]] = mapped_column(String(64))
    details: Mapped[dict[str, Any]]


class QuarantineSequenceRow(Base):
    """The store's own order of quarantine events, numbered as they are stored (by a trigger,
    migration 0002_qseq): readers order a chip's events by ``seq``, never by a clock."""

    __tablename__ = "quarantine_sequence"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)


class AnalysisRow(Base):
    """One stored analysis run (migration 0003_analyses), written by ``sdc analyze`` whether or
    not it found anything: "latest" in reports and hand-offs means the newest of these, so a
    verdict the latest analysis did not repeat no longer counts. Not a record kind: it stays
    in the store that ran the analysis (verdicts ingested from elsewhere carry their own
    ``analysis_id`` and ``created_at``, which readers also consider)."""

    __tablename__ = "analyses"

    analysis_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(index=True)
    chips: Mapped[int] = mapped_column(Integer)
    results: Mapped[int] = mapped_column(Integer)
    verdicts: Mapped[int] = mapped_column(Integer)
    breaker_tripped: Mapped[bool] = mapped_column(Boolean)


ROW_TYPES = {
    "chip": ChipRow,
    "sweep": SweepRow,
    "probe_result": ProbeResultRow,
    "job_event": JobEventRow,
    "verdict": VerdictRow,
    "quarantine_event": QuarantineEventRow,
}
