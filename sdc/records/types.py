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
import types
import typing
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, ClassVar, Literal, Optional, Union

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

# ---------------------------------------------------------------------------------------
# Validation. Ingest must take tens of thousands of lines a second with every field checked,
# so each record kind gets one straight-line validator generated from its type hints (the
# way dataclasses generate __init__) instead of jsonschema or a loop over per-field closures.
# The generated JSON Schema (below) documents exactly the same rules; a test keeps them equal.

# Longest text the store takes per field (the String(n) columns of sdc.store.models; a test
# keeps the two equal). Fields absent here are unbounded text.
MAX_LENGTH: dict[str, int] = {
    "chip_id": 128, "host": 255, "vendor": 64, "model": 255, "stack_hash": 64,
    "sweep_id": 64, "suite": 64, "sdc_version": 64,
    "result_id": 64, "probe": 128, "digest": 128, "reference_digest": 128, "throughput_unit": 32,
    "event_id": 64, "job_id": 255, "kind": 64,
    "verdict_id": 64, "analysis_id": 64, "actor": 255,
}  # fmt: skip
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
# Integer fields stored as BIGINT; every other integer field is a 32-bit INTEGER column.
INT64_FIELDS = frozenset({"memory_bytes", "seed", "step"})

ENVELOPE = ("record", "schema_version")
_MISSING = object()


def _is_optional(hint: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return True, args[0]
    return False, hint


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _fail_type(name: str, expected: str, value: Any) -> typing.NoReturn:
    raise RecordError(f"field '{name}' must be {expected}, got {_type_name(value)}")


def _check_text(name: str, value: str, limit: int | None) -> None:
    if limit is not None and len(value) > limit:
        raise RecordError(f"field '{name}' is {len(value):,} characters long, at most {limit} allowed")
    if "\x00" in value:
        raise RecordError(f"field '{name}' contains a NUL character")


def _fail_int(name: str, value: Any, bounds: tuple[int, int]) -> typing.NoReturn:
    if type(value) is not int:
        _fail_type(name, "an integer", value)
    raise RecordError(f"field '{name}' is {value}, outside {bounds[0]}..{bounds[1]}")


def _number(name: str, value: Any) -> float:
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            raise RecordError(f"field '{name}' is too large for a 64-bit float") from None
    if type(value) is float:
        raise RecordError(f"field '{name}' must be finite, got {value}")
    _fail_type(name, "a number", value)


def _time(name: str, value: Any) -> datetime:
    if type(value) is not str:
        _fail_type(name, "an ISO 8601 time string", value)
    try:
        return parse_time(value)
    except ValueError:
        raise RecordError(f"field '{name}' is not an ISO 8601 time: {value[:40]!r}") from None


def _fail_choice(name: str, allowed: tuple[str, ...], value: Any) -> typing.NoReturn:
    raise RecordError(f"field '{name}' must be one of {', '.join(allowed)}; got {str(value)[:40]!r}")


def _numbers(name: str, value: Any) -> list[float]:
    if type(value) is not list:
        _fail_type(name, "an array", value)
    out = []
    for item in value:
        if type(item) is not float or item - item != 0.0:
            item = _number(f"{name}[]", item)
        out.append(item)
    return out


def _texts(name: str, value: Any) -> list[str]:
    if type(value) is not list:
        _fail_type(name, "an array", value)
    for item in value:
        if type(item) is not str:
            _fail_type(f"{name}[]", "a string", item)
        _check_text(f"{name}[]", item, None)
    return value


def _field_check(name: str, hint: Any, env: dict[str, Any]) -> list[str]:
    """Source lines that check (and convert) ``v``, the value of field ``name``."""
    _, base = _is_optional(hint)
    origin = typing.get_origin(base)
    n = repr(name)
    if base is str:
        env[f"L_{name}"] = limit = MAX_LENGTH.get(name)
        bad = f"len(v) > {limit} or '\\x00' in v" if limit else "'\\x00' in v"
        return [
            f"if type(v) is not str: _fail_type({n}, 'a string', v)",
            f"if {bad}: _check_text({n}, v, L_{name})",
        ]
    if base is int:
        lo, hi = env[f"B_{name}"] = INT64 if name in INT64_FIELDS else INT32
        return [f"if type(v) is not int or not {lo} <= v <= {hi}: _fail_int({n}, v, B_{name})"]
    if base is float:
        return [f"if type(v) is not float or v - v != 0.0: v = _number({n}, v)"]
    if base is datetime:
        return [f"v = _time({n}, v)"]
    if origin is Literal:
        env[f"A_{name}"] = allowed = typing.get_args(base)
        env[f"S_{name}"] = frozenset(allowed)
        return [f"if type(v) is not str or v not in S_{name}: _fail_choice({n}, A_{name}, v)"]
    if base is dict or origin is dict:
        return [f"if type(v) is not dict: _fail_type({n}, 'an object', v)"]
    if origin is list and typing.get_args(base) == (float,):
        return [f"v = _numbers({n}, v)"]
    if origin is list and typing.get_args(base) == (str,):
        return [f"v = _texts({n}, v)"]
    raise TypeError(f"unsupported record field type {hint!r} for {name}")  # pragma: no cover


def _compile_validator(cls: type[Record]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Generate ``validate(obj) -> field values`` for one record class."""
    hints = typing.get_type_hints(cls)
    env: dict[str, Any] = {
        "_MISSING": _MISSING, "_fail_type": _fail_type, "_check_text": _check_text, "_fail_int": _fail_int,
        "_number": _number, "_time": _time, "_fail_choice": _fail_choice, "_numbers": _numbers,
        "_texts": _texts, "RecordError": RecordError,
        "KEYS": frozenset([*ENVELOPE, *(f.name for f in dataclasses.fields(cls))]),
    }  # fmt: skip
    body = [
        "def validate(obj):",
        "    extra = obj.keys() - KEYS",
        "    if extra:",
        f"        raise RecordError(f\"unknown field '{{sorted(extra)[0][:40]}}' in {cls.KIND} record"
        f" (see docs/schema/{cls.KIND}.json)\")",
        "    out = {}",
    ]
    for f in dataclasses.fields(cls):
        optional, _ = _is_optional(hints[f.name])
        body.append(f"    v = obj.get({f.name!r}, _MISSING)")
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            if f.default_factory is not dataclasses.MISSING:
                env[f"D_{f.name}"] = f.default_factory
                default = f"D_{f.name}()"
            else:
                env[f"D_{f.name}"] = f.default
                default = f"D_{f.name}"
            body.append(f"    if v is _MISSING: v = {default}")
        else:
            body.append("    if v is _MISSING:")
            body.append(
                f"        raise RecordError(\"field '{f.name}' missing from {cls.KIND} record"
                f" (see docs/schema/{cls.KIND}.json)\")"
            )
        checks = _field_check(f.name, hints[f.name], env)
        if optional:
            body.append("    if v is not None:")
            body += [f"        {line}" for line in checks]
        else:
            body += [f"    {line}" for line in checks]
        body.append(f"    out[{f.name!r}] = v")
    body.append("    return out")
    exec("\n".join(body), env)  # noqa: S102 - source built above from the class's own type hints
    return env["validate"]


@dataclass(frozen=True)
class _Spec:
    cls: type[Record]
    required: tuple[str, ...]
    validate: Callable[[dict[str, Any]], dict[str, Any]]


def _build_spec(cls: type[Record]) -> _Spec:
    required = tuple(
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    return _Spec(cls, required, _compile_validator(cls))


_SPECS: dict[str, _Spec] = {cls.KIND: _build_spec(cls) for cls in RECORD_TYPES}


def validate_json_dict(obj: Any) -> tuple[str, dict[str, Any]]:
    """Check one decoded JSON object against its schema; returns (kind, field values).

    The values are what the record's constructor takes (times parsed, defaults filled in).
    Ingest stops here rather than building dataclasses it would take apart again.
    """
    if type(obj) is not dict:
        raise RecordError(f"a record must be a JSON object, got {_type_name(obj)}")
    kind = obj.get("record", _MISSING)
    spec = _SPECS.get(kind) if type(kind) is str else None
    if spec is None:
        if kind is _MISSING:
            raise RecordError(f"field 'record' missing: it names the record type ({', '.join(_SPECS)})")
        raise RecordError(f"field 'record' must be one of {', '.join(_SPECS)}; got {str(kind)[:40]!r}")
    version = obj.get("schema_version", SCHEMA_VERSION)
    if version is not SCHEMA_VERSION and (type(version) is not int or not 1 <= version <= SCHEMA_VERSION):
        raise RecordError(f"field 'schema_version' must be an integer from 1 to {SCHEMA_VERSION}; got {version!r}")
    return kind, spec.validate(obj)


def from_json_dict(obj: Any) -> Record:
    """Validate one decoded JSON object and build its record; raises RecordError."""
    kind, values = validate_json_dict(obj)
    return BY_KIND[kind](**values)


def loads(line: str | bytes) -> Any:
    """Decode one JSON line; NaN and Infinity are refused (JSON has no such numbers)."""
    try:
        return json.loads(line, parse_constant=_reject_constant)
    except RecordError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise RecordError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise RecordError("not valid JSON: nested too deeply") from None


def from_json(line: str | bytes) -> Record:
    """Parse one JSON line into a record; raises RecordError with what is wrong."""
    return from_json_dict(loads(line))


def _reject_constant(name: str) -> float:
    raise RecordError(f"{name} is not allowed in sdc records (use null for a missing number)")
