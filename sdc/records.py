"""The one interchange format: evidence records as frozen dataclasses ⇄ JSON lines.

Every producer (sweeps, the training sentinel, the analysis, other tools) emits these
records and every consumer (store, outbox, ingest, export, reports) reads them. Each record
carries a stable id assigned once where it is created, so storing it twice is a no-op, and a
``schema_version`` so older lines stay readable. The JSON Schema files in ``docs/schema/`` are
generated from these classes (``python -m sdc.records --write-schemas``) and a test keeps
them in sync.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import types
import typing
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal, Optional, Union

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
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """ISO 8601 with an offset or 'Z'; a naive time is taken as UTC."""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class RecordError(ValueError):
    """A record that does not match its schema; the message names the field."""


@dataclass(frozen=True)
class Record:
    """Base of all records: ``KIND`` names the JSON ``kind`` and ``ID_FIELD`` its stable id."""

    KIND: ClassVar[str] = ""
    ID_FIELD: ClassVar[str] = ""
    # JSON key of a field whose name would collide with the record's own "kind".
    JSON_NAMES: ClassVar[dict[str, str]] = {}

    @property
    def record_id(self) -> str:
        return getattr(self, self.ID_FIELD)

    def to_json_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.KIND, "schema_version": SCHEMA_VERSION}
        names = self.JSON_NAMES
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[names.get(f.name, f.name)] = format_time(value) if isinstance(value, datetime) else value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True)
class Chip(Record):
    """One accelerator (or the CPU) by its stable identity, with where it sits and what runs it.

    ``chip_id`` is the vendor UUID or serial. Where a backend exposes none, sdc derives one
    from host, backend, index and model (see ``sdc.devices``) and marks it with a ``host:``
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
    # In JSON the verdict's kind (wrong/slow/inconsistent) is "verdict_kind": "kind" names the record.
    JSON_NAMES: ClassVar[dict[str, str]] = {"kind": "verdict_kind"}

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

# ---------------------------------------------------------------------------------------
# Validation: one compiled checker per field, built from the dataclass type hints. It is
# hand-rolled rather than jsonschema because ingest must take tens of thousands of lines a
# second; the generated JSON Schema documents exactly the same rules.


def _is_optional(hint: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return True, args[0]
    return False, hint


def _checker(name: str, hint: Any):
    optional, base = _is_optional(hint)
    origin = typing.get_origin(base)

    def wrap(check):
        if not optional:
            return check

        def check_optional(value):
            return None if value is None else check(value)

        return check_optional

    if base is str:

        def check(value):
            if not isinstance(value, str):
                raise RecordError(f"field '{name}' must be a string, got {_type_name(value)}")
            return value

    elif base is int:

        def check(value):
            if isinstance(value, bool) or not isinstance(value, int):
                raise RecordError(f"field '{name}' must be an integer, got {_type_name(value)}")
            return value

    elif base is float:

        def check(value):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RecordError(f"field '{name}' must be a number, got {_type_name(value)}")
            if not math.isfinite(value):
                raise RecordError(f"field '{name}' must be finite, got {value}")
            return float(value)

    elif base is datetime:

        def check(value):
            if not isinstance(value, str):
                raise RecordError(f"field '{name}' must be an ISO 8601 time string, got {_type_name(value)}")
            try:
                return parse_time(value)
            except ValueError:
                raise RecordError(f"field '{name}' is not an ISO 8601 time: {value[:40]!r}") from None

    elif origin is Literal:
        allowed = typing.get_args(base)

        def check(value):
            if value not in allowed:
                raise RecordError(f"field '{name}' must be one of {', '.join(allowed)}; got {str(value)[:40]!r}")
            return value

    elif base is dict or origin is dict:

        def check(value):
            if not isinstance(value, dict):
                raise RecordError(f"field '{name}' must be an object, got {_type_name(value)}")
            return value

    elif origin is list:
        (item,) = typing.get_args(base)
        item_check = _checker(f"{name}[]", item)

        def check(value):
            if not isinstance(value, list):
                raise RecordError(f"field '{name}' must be an array, got {_type_name(value)}")
            return [item_check(v) for v in value]

    else:  # pragma: no cover - a new field type must be taught here
        raise TypeError(f"unsupported record field type {hint!r} for {name}")
    return wrap(check)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


@dataclass(frozen=True)
class _Spec:
    cls: type[Record]
    required: tuple[str, ...]
    checks: dict[str, Any]
    defaults: dict[str, Any]
    fields: dict[str, str]  # JSON key -> field name


def _build_spec(cls: type[Record]) -> _Spec:
    hints = typing.get_type_hints(cls)
    checks, required, defaults, names = {}, [], {}, {}
    for f in dataclasses.fields(cls):
        key = cls.JSON_NAMES.get(f.name, f.name)
        names[key] = f.name
        checks[key] = _checker(key, hints[f.name])
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(key)
    return _Spec(cls, tuple(required), checks, defaults, names)


_SPECS: dict[str, _Spec] = {cls.KIND: _build_spec(cls) for cls in RECORD_TYPES}


def from_json_dict(obj: Any) -> Record:
    """Validate one decoded JSON object and build its record; raises RecordError."""
    if not isinstance(obj, dict):
        raise RecordError(f"a record must be a JSON object, got {_type_name(obj)}")
    kind = obj.get("kind")
    spec = _SPECS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise RecordError(f"field 'kind' must be one of {', '.join(_SPECS)}; got {str(kind)[:40]!r}")
    version = obj.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise RecordError(f"field 'schema_version' must be an integer from 1 to {SCHEMA_VERSION}; got {version!r}")
    for name in spec.required:
        if name not in obj:
            raise RecordError(f"field '{name}' missing from {kind} record (see docs/schema/{kind}.json)")
    values = {}
    checks = spec.checks
    for name, value in obj.items():
        check = checks.get(name)
        if check is None:
            if name in ("kind", "schema_version"):
                continue
            raise RecordError(f"unknown field '{name[:40]}' in {kind} record (see docs/schema/{kind}.json)")
        values[spec.fields[name]] = check(value)
    return spec.cls(**values)


def from_json(line: str | bytes) -> Record:
    """Parse one JSON line into a record; raises RecordError with what is wrong."""
    try:
        obj = json.loads(line, parse_constant=_reject_constant)
    except RecordError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"not valid JSON: {exc}") from None
    return from_json_dict(obj)


def _reject_constant(name: str) -> float:
    raise RecordError(f"{name} is not allowed in sdc records (use null for a missing number)")


# ---------------------------------------------------------------------------------------
# JSON Schema, generated from the same type hints.


def _schema_for(hint: Any) -> dict[str, Any]:
    optional, base = _is_optional(hint)
    origin = typing.get_origin(base)
    if base is str:
        schema: dict[str, Any] = {"type": "string"}
    elif base is int:
        schema = {"type": "integer"}
    elif base is float:
        schema = {"type": "number"}
    elif base is datetime:
        schema = {"type": "string", "format": "date-time"}
    elif origin is Literal:
        schema = {"enum": list(typing.get_args(base))}
    elif base is dict or origin is dict:
        schema = {"type": "object"}
    elif origin is list:
        schema = {"type": "array", "items": _schema_for(typing.get_args(base)[0])}
    else:  # pragma: no cover
        raise TypeError(hint)
    if optional:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def json_schema(cls: type[Record]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {
        "kind": {"const": cls.KIND},
        "schema_version": {"type": "integer", "minimum": 1, "maximum": SCHEMA_VERSION},
    }
    for f in dataclasses.fields(cls):
        properties[cls.JSON_NAMES.get(f.name, f.name)] = _schema_for(hints[f.name])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://sdc.dev/schema/{cls.KIND}.json",
        "title": cls.__name__,
        "description": (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " "),
        "type": "object",
        "properties": properties,
        "required": ["kind", *_SPECS[cls.KIND].required],
        "additionalProperties": False,
    }


def write_schemas(directory: str) -> list[str]:
    import pathlib

    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for cls in RECORD_TYPES:
        path = out / f"{cls.KIND}.json"
        path.write_text(json.dumps(json_schema(cls), indent=2) + "\n")
        written.append(str(path))
    return written


if __name__ == "__main__":  # python -m sdc.records --write-schemas [DIR]
    if len(sys.argv) >= 2 and sys.argv[1] == "--write-schemas":
        for p in write_schemas(sys.argv[2] if len(sys.argv) > 2 else "docs/schema"):
            print(p)
    else:
        print("usage: python -m sdc.records --write-schemas [DIR]", file=sys.stderr)
        sys.exit(2)
