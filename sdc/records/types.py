"""The one interchange format: evidence records as frozen dataclasses ⇄ JSON lines.

This is the one declaration of the records: each field's type carries its constraints
(msgspec ``Meta``: lengths, ranges, the safe set of ids), which validation enforces and the
JSON Schemas state. Frozen dataclasses rather than msgspec Structs: the whole tree (sweeps,
analysis, tests) builds and ``dataclasses.replace``-s them, and msgspec validates dataclasses
just as well.

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
from typing import Annotated, Any, ClassVar, Literal, Optional

from msgspec import Meta

SCHEMA_VERSION = 1

SweepStatus = Literal["running", "complete", "incomplete", "aborted"]
ResultStatus = Literal["ok", "mismatch", "error", "timeout", "skipped"]
Diagnosis = Literal["ok", "correct", "transient", "persistent", "divergence", "unattributed"]
VerdictKind = Literal["wrong", "slow", "inconsistent", "unreliable"]
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


# ---------------------------------------------------------------------------------------
# Field types: each says what a field takes, once. ``sdc.records.validation`` checks decoded
# JSON against them (msgspec), ``sdc.records.schema`` writes them as JSON Schema, and the
# store's String(n) columns have the same lengths (a test keeps them equal).

# Chip ids and host names end up in shell commands, NHC and Slurm lines and Kubernetes
# names: only these characters are taken (README "Records", docs/schema).
SAFE_ID_CHARACTERS = "A-Z a-z 0-9 . _ - : @ + ="
# No leading "-": an id becomes an argument of the commands sdc prints and would read as an option.
SAFE_ID_PATTERN = r"^[A-Za-z0-9._:@+=][A-Za-z0-9._:@+=-]*$"
# Control characters (C0, DEL, C1) are never part of an id, a name or a digest; free text
# (a message, a summary, a reason) may hold tab and newline. Enforced by validation, which
# skips the search where the JSON text cannot hold one (see validation.check_record).
TEXT_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
FREE_TEXT_PATTERN = "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f]*$"
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
_SAFE = "Safe character set " + SAFE_ID_CHARACTERS + ": it reaches shell commands, NHC and Slurm lines"


def _text(max_length: int | None = None, pattern: str = TEXT_PATTERN) -> Any:
    return Annotated[str, Meta(max_length=max_length, extra_json_schema={"pattern": pattern})]


Text = _text()
Text32, Text64, Text128, Text255 = _text(32), _text(64), _text(128), _text(255)
FreeText = _text(pattern=FREE_TEXT_PATTERN)
ChipId = Annotated[str, Meta(max_length=128, pattern=SAFE_ID_PATTERN, description=_SAFE)]
HostName = Annotated[str, Meta(max_length=255, pattern=SAFE_ID_PATTERN, description=_SAFE)]
Int32 = Annotated[int, Meta(ge=INT32[0], le=INT32[1])]  # an INTEGER column
Int64 = Annotated[int, Meta(ge=INT64[0], le=INT64[1])]  # a BIGINT column
# A time or a rate is never negative: such a value is a broken producer, not a fast chip.
Seconds = Annotated[float, Meta(ge=0)]
Rate = Annotated[float, Meta(ge=0)]
Time = Annotated[datetime, Meta(extra_json_schema={"format": "date-time"})]


def _utc(name: str, value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:  # year 9999 with a negative offset, year 1 with a positive one
        raise RecordError(f"field '{name}' is {value.isoformat()}, which is outside the years 1 to 9999 in UTC") from None


@dataclass(frozen=True)
class Record:
    """Base of all records: ``KIND`` names the JSON ``kind`` and ``ID_FIELD`` its stable id."""

    KIND: ClassVar[str] = ""
    ID_FIELD: ClassVar[str] = ""
    TIME_FIELDS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        # Every time a record holds is UTC, whether decoded ('+02:00', no offset) or built here.
        for name in self.TIME_FIELDS:
            value = getattr(self, name)
            if value is not None and value.tzinfo is not timezone.utc:
                object.__setattr__(self, name, _utc(name, value))

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

    chip_id: ChipId
    host: HostName
    index: Int32
    vendor: Text64
    model: Text255
    memory_bytes: Int64
    stack: dict[str, Any]
    stack_hash: Text64
    observed_at: Time = field(default_factory=utcnow)


@dataclass(frozen=True)
class Sweep(Record):
    """One run of a probe suite on one host. Only ``complete`` sweeps count as evidence."""

    KIND: ClassVar[str] = "sweep"
    ID_FIELD: ClassVar[str] = "sweep_id"

    sweep_id: Text64
    host: HostName
    suite: Text64
    started_at: Time
    status: SweepStatus
    sdc_version: Text64
    finished_at: Optional[Time] = None
    pid: Optional[Int32] = None
    message: FreeText = ""


@dataclass(frozen=True)
class ProbeResult(Record):
    """One probe case run on one chip, judged and digested.

    ``digest`` is bit-exact over the output, the value the cohort majority is taken over.
    ``stack_hash`` is the chip's software stack when the probe ran, so a driver upgrade
    starts a new cohort instead of looking like a fault.
    """

    KIND: ClassVar[str] = "probe_result"
    ID_FIELD: ClassVar[str] = "result_id"

    result_id: Text64
    sweep_id: Text64
    chip_id: ChipId
    probe: Text128
    probe_version: Int32
    case: dict[str, Any]
    seed: Int64
    status: ResultStatus
    stack_hash: Text64
    repeats: Int32
    distinct_repeat_digests: Int32
    timings: list[Seconds]
    observed_at: Time
    digest: Optional[Text128] = None
    reference_digest: Optional[Text128] = None
    max_abs_err: Optional[float] = None
    max_rel_err: Optional[float] = None
    error_bound: Optional[float] = None
    throughput: Optional[Rate] = None
    throughput_unit: Optional[Text32] = None
    message: FreeText = ""
    telemetry: dict[str, Any] = field(default_factory=dict)

    @property
    def case_key(self) -> str:
        return canonical_json(self.case)


@dataclass(frozen=True)
class JobEvent(Record):
    """One check of the in-training sentinel on one rank."""

    KIND: ClassVar[str] = "job_event"
    ID_FIELD: ClassVar[str] = "event_id"

    event_id: Text64
    job_id: Text255
    step: Int64
    rank: Int32
    world_size: Int32
    host: HostName
    kind: Text64
    diagnosis: Diagnosis
    observed_at: Time
    chip_id: Optional[ChipId] = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict(Record):
    """The analysis's conclusion about one chip, pointing at the evidence behind it."""

    KIND: ClassVar[str] = "verdict"
    ID_FIELD: ClassVar[str] = "verdict_id"

    verdict_id: Text64
    analysis_id: Text64
    chip_id: ChipId
    kind: VerdictKind
    severity: Severity
    k: Int32
    n: Int32
    summary: FreeText
    created_at: Time
    statistic: Optional[float] = None
    p_value: Optional[float] = None
    score: Optional[float] = None
    first_seen: Optional[Time] = None
    last_seen: Optional[Time] = None
    evidence_ids: list[Text] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QuarantineEvent(Record):
    """One transition of a chip's quarantine state. Append-only: never edited or deleted."""

    KIND: ClassVar[str] = "quarantine_event"
    ID_FIELD: ClassVar[str] = "event_id"

    event_id: Text64
    chip_id: ChipId
    from_state: ChipState
    to_state: ChipState
    actor: Text255
    reason: FreeText
    at: Time
    verdict_id: Optional[Text64] = None
    details: dict[str, Any] = field(default_factory=dict)


RECORD_TYPES: tuple[type[Record], ...] = (Chip, Sweep, ProbeResult, JobEvent, Verdict, QuarantineEvent)


def _declared(cls: type[Record]) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _metas(hint: Any) -> list[Meta]:
    """The msgspec constraints on a field's type (under Optional[...] and list[...] too)."""
    found = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Meta)]
    for arg in typing.get_args(hint):
        found += _metas(arg)
    return found


for _cls in RECORD_TYPES:
    _cls.TIME_FIELDS = tuple(
        f.name for f in dataclasses.fields(_cls) if datetime in (typing.get_type_hints(_cls)[f.name], *typing.get_args(typing.get_type_hints(_cls)[f.name]))
    )
# Longest text the store takes per field (the String(n) columns of sdc.store.models); integer
# fields stored as BIGINT. Both read off the declarations above.
MAX_LENGTH: dict[str, int] = {
    name: meta.max_length
    for cls in RECORD_TYPES for name, hint in _declared(cls).items() if name.isidentifier()
    for meta in _metas(hint) if meta.max_length is not None
}  # fmt: skip
INT64_FIELDS = frozenset(
    name for cls in RECORD_TYPES for name, hint in _declared(cls).items() for meta in _metas(hint) if meta.le == INT64[1]
)
BY_KIND: dict[str, type[Record]] = {cls.KIND: cls for cls in RECORD_TYPES}
# Order in which records must be written so foreign keys are satisfied.
WRITE_ORDER: tuple[str, ...] = ("chip", "sweep", "probe_result", "job_event", "verdict", "quarantine_event")
