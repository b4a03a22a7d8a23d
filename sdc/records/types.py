"""The one interchange format: evidence records as frozen dataclasses ⇄ JSON lines.

Every producer (sweeps, the training sentinel, the analysis, other tools) emits these
records and every consumer (store, outbox, ingest, export, reports) reads them. Each record
carries a stable id assigned once where it is created, so storing it twice is a no-op, and a
``schema_version`` so older lines stay readable. The JSON Schema files in ``docs/schema/`` are
generated from these classes (``python -m sdc.records --write-schemas``) and a test keeps
them in sync; ``sdc.records.validation`` checks decoded JSON against them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal, Optional

SCHEMA_VERSION = 1

SweepStatus = Literal["running", "complete", "incomplete", "aborted"]
ResultStatus = Literal["ok", "mismatch", "error", "timeout", "skipped"]
Diagnosis = Literal["ok", "correct", "transient", "persistent", "divergence", "unattributed"]
VerdictKind = Literal["wrong", "slow", "inconsistent"]
Severity = Literal["low", "medium", "high", "critical"]
ChipState = Literal["healthy", "suspect", "quarantined", "released", "retired"]

SWEEP_STATUSES: tuple[str, ...] = typing.get_args(SweepStatus)
RESULT_STATUSES: tuple[str, ...] = typing.get_args(ResultStatus)
DIAGNOSES: tuple[str, ...] = typing.get_args(Diagnosis)
VERDICT_KINDS: tuple[str, ...] = typing.get_args(VerdictKind)
SEVERITIES: tuple[str, ...] = typing.get_args(Severity)
CHIP_STATES: tuple[str, ...] = typing.get_args(ChipState)


def new_id() -> str:
    """A fresh record id (random UUID, hex): assigned once where the record is born."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def stack_hash(stack: dict[str, Any]) -> str:
    """Short hash of a software-stack fingerprint; chips with equal hashes share a cohort."""
    canonical = json.dumps(stack, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def canonical_json(value: Any) -> str:
    """Key-sorted compact JSON: equal values give equal strings (used for cohort keys)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def format_time(value: datetime) -> str:
    """UTC, microseconds, 'Z': the one way records write times."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    elif value.tzinfo is not timezone.utc:
        value = value.astimezone(timezone.utc)
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


def parse_time(text: str) -> datetime:
    """ISO 8601 with an offset or 'Z'; a naive time is taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        if not text.endswith(("Z", "z")):  # Python 3.10 does not know 'Z'
            raise
        value = datetime.fromisoformat(text[:-1] + "+00:00")
    tz = value.tzinfo
    if tz is timezone.utc:
        return value
    if tz is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class RecordError(ValueError):
    """A record that does not match its schema; the message names the field."""


@dataclass(frozen=True)
class Record:
    """Base of all records: ``KIND`` names the JSON ``kind`` and ``ID_FIELD`` its stable id."""

    KIND: ClassVar[str] = ""
    ID_FIELD: ClassVar[str] = ""

    @property
    def record_id(self) -> str:
        return getattr(self, self.ID_FIELD)

    def to_json_dict(self) -> dict[str, Any]:
        # The envelope key is "record", not "kind": JobEvent and Verdict have a field 'kind'.
        out: dict[str, Any] = {"record": self.KIND, "schema_version": SCHEMA_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = format_time(value) if isinstance(value, datetime) else value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class Chip(Record):
    """One accelerator (or the CPU) by its stable identity, with where it sits and what runs it.

    ``chip_id`` is the vendor UUID or serial. Where a backend exposes none, sdc derives one
    from host, backend, index and model (see ``sdc.node.devices``) and marks it with a ``host:``
    prefix so operators can tell it is positional, not burned into the chip.
    """

    KIND: ClassVar[str] = "chip"
    ID_FIELD: ClassVar[str] = "chip_id"

    chip_id: str
    host: str
    index: int
    vendor: str
    model: str
    memory_bytes: int
    stack: dict[str, Any]
    stack_hash: str
    observed_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class Sweep(Record):
    """One run of a probe suite on one host. Only ``complete`` sweeps count as evidence."""

    KIND: ClassVar[str] = "sweep"
    ID_FIELD: ClassVar[str] = "sweep_id"

    sweep_id: str
    host: str
    suite: str
    started_at: datetime
    status: SweepStatus
    sdc_version: str
    finished_at: Optional[datetime] = None
    pid: Optional[int] = None
    message: str = ""


@dataclass(frozen=True)
class ProbeResult(Record):
    """One probe case run on one chip, judged and digested.

    ``digest`` is bit-exact over the output, the value the cohort majority is taken over.
    ``stack_hash`` is the chip's software stack when the probe ran, so a driver upgrade
    starts a new cohort instead of looking like a fault.
    """

    KIND: ClassVar[str] = "probe_result"
    ID_FIELD: ClassVar[str] = "result_id"

    result_id: str
    sweep_id: str
    chip_id: str
    probe: str
    probe_version: int
    case: dict[str, Any]
    seed: int
    status: ResultStatus
    stack_hash: str
    repeats: int
    distinct_repeat_digests: int
    timings: list[float]
    observed_at: datetime
    digest: Optional[str] = None
    reference_digest: Optional[str] = None
    max_abs_err: Optional[float] = None
    max_rel_err: Optional[float] = None
    error_bound: Optional[float] = None
    throughput: Optional[float] = None
    throughput_unit: Optional[str] = None
    message: str = ""
    telemetry: dict[str, Any] = field(default_factory=dict)

    @property
    def case_key(self) -> str:
        return canonical_json(self.case)


@dataclass(frozen=True)
class JobEvent(Record):
    """One check of the in-training sentinel on one rank."""

    KIND: ClassVar[str] = "job_event"
    ID_FIELD: ClassVar[str] = "event_id"

    event_id: str
    job_id: str
    step: int
    rank: int
    world_size: int
    host: str
    kind: str
    diagnosis: Diagnosis
    observed_at: datetime
    chip_id: Optional[str] = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict(Record):
    """The analysis's conclusion about one chip, pointing at the evidence behind it."""

    KIND: ClassVar[str] = "verdict"
    ID_FIELD: ClassVar[str] = "verdict_id"

    verdict_id: str
    analysis_id: str
    chip_id: str
    kind: VerdictKind
    severity: Severity
    k: int
    n: int
    summary: str
    created_at: datetime
    statistic: Optional[float] = None
    p_value: Optional[float] = None
    score: Optional[float] = None
    first_seen: Optional[datetime] = None
    last_seen: Optional[datetime] = None
    evidence_ids: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QuarantineEvent(Record):
    """One transition of a chip's quarantine state. Append-only: never edited or deleted."""

    KIND: ClassVar[str] = "quarantine_event"
    ID_FIELD: ClassVar[str] = "event_id"

    event_id: str
    chip_id: str
    from_state: ChipState
    to_state: ChipState
    actor: str
    reason: str
    at: datetime
    verdict_id: Optional[str] = None
    details: dict[str, Any] = field(default_factory=dict)


RECORD_TYPES: tuple[type[Record], ...] = (Chip, Sweep, ProbeResult, JobEvent, Verdict, QuarantineEvent)
BY_KIND: dict[str, type[Record]] = {cls.KIND: cls for cls in RECORD_TYPES}
# Order in which records must be written so foreign keys are satisfied.
WRITE_ORDER: tuple[str, ...] = ("chip", "sweep", "probe_result", "job_event", "verdict", "quarantine_event")
