"""Validation of decoded JSON against the record types, and the string rules of ingest.

Ingest must take tens of thousands of lines a second with every field checked, so each
record kind gets one straight-line validator generated from its type hints (the way
dataclasses generate ``__init__``) instead of jsonschema or a loop over per-field closures.
``sdc.records.schema`` writes the same rules as JSON Schema; a test keeps them equal.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Literal, Union

from sdc.records.types import BY_KIND, RECORD_TYPES, SCHEMA_VERSION, Record, RecordError, format_time, parse_time

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


# Control characters (C0, DEL, C1) are never part of an id, a name or a digest: the evidence
# loader, terminals, NHC and Slurm lines all treat some of them specially, so one hostile
# record could shift every column after it or rewrite an operator's screen. Free text (a
# probe's message, a verdict's summary, a transition's reason) may hold tab and newline.
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL = _CONTROL_RE.search
_CONTROL_IN_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]").search
FREE_TEXT_FIELDS = frozenset({"message", "summary", "reason"})
# Chip ids and host names end up in shell commands, NHC and Slurm lines and Kubernetes
# names: only these characters are taken (README "Records", docs/schema).
SAFE_ID_CHARACTERS = "A-Z a-z 0-9 . _ - : @ + ="
_SAFE_ID = re.compile(r"[A-Za-z0-9._:@+=-]+\Z").match
SAFE_ID_FIELDS = frozenset({"chip_id", "host"})
SAFE_ID_PATTERN = r"^[A-Za-z0-9._:@+=-]+$"
TEXT_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
FREE_TEXT_PATTERN = "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f]*$"
# Fields that measure time or rate: a negative value is a broken producer, not a fast chip.
NONNEGATIVE_FIELDS = frozenset({"timings", "throughput"})
# How far ahead of this machine's clock an ingested time may be (clocks of a fleet drift).
FUTURE_SKEW = timedelta(minutes=5)


def _char_name(char: str) -> str:
    return f"U+{ord(char):04X}" + (" (NUL)" if char == "\x00" else "")


def _check_text(name: str, value: str, limit: int | None) -> None:
    if limit is not None and len(value) > limit:
        raise RecordError(f"field '{name}' is {len(value):,} characters long, at most {limit} allowed")
    base = name.partition("[")[0].partition(".")[0]
    if base in SAFE_ID_FIELDS:
        bad = next((c for c in value if not _SAFE_ID(c)), None)
        if bad is None:  # empty
            raise RecordError(f"field '{name}' is empty")
        raise RecordError(
            f"field '{name}' contains {_char_name(bad)}, outside the safe set {SAFE_ID_CHARACTERS} "
            "for chip ids and host names (see README, Records)"
        )
    found = (_CONTROL_IN_TEXT if base in FREE_TEXT_FIELDS else _CONTROL)(value)
    if found:
        raise RecordError(
            f"field '{name}' contains control character {_char_name(found.group())}; "
            "sdc records take none (see README, Records)"
        )


def _check_nested(name: str, value: Any) -> None:
    """Every string inside a JSON object or array field (keys too) is free of control characters."""
    if type(value) is str:
        if _CONTROL(value):
            _check_text(name, value, None)
    elif type(value) is dict:
        for key, item in value.items():
            if type(key) is str and _CONTROL(key):
                _check_text(f"{name} (a key)", key, None)
            _check_nested(f"{name}.{key}" if type(key) is str and not _CONTROL(key) else name, item)
    elif type(value) is list:
        for item in value:
            _check_nested(f"{name}[]", item)


def _fail_negative(name: str, value: float) -> typing.NoReturn:
    raise RecordError(f"field '{name}' is {value!r}; a time or a rate is never negative")


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
        raise RecordError(f"field '{name}' is not an ISO 8601 time: {_printable(value[:40])!r}") from None
    except OverflowError:  # year 9999 with a negative offset, year 1 with a positive one
        raise RecordError(
            f"field '{name}' is {_printable(value[:40])!r}, which is outside the years 1 to 9999 in UTC"
        ) from None


def _printable(text: str) -> str:
    return _CONTROL_RE.sub("?", text)


def _fail_choice(name: str, allowed: tuple[str, ...], value: Any) -> typing.NoReturn:
    raise RecordError(f"field '{name}' must be one of {', '.join(allowed)}; got {_printable(str(value)[:40])!r}")


def _numbers(name: str, value: Any) -> list[float]:
    if type(value) is not list:
        _fail_type(name, "an array", value)
    out = []
    nonnegative = name in NONNEGATIVE_FIELDS
    for item in value:
        if type(item) is not float or item - item != 0.0:
            item = _number(f"{name}[]", item)
        if nonnegative and item < 0:
            _fail_negative(f"{name}[]", item)
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
        # deep=False: the caller saw no escape, DEL or C1 byte in the JSON text, so no string
        # of this record can hold a control character and the search is skipped.
        if name in SAFE_ID_FIELDS:
            bad = f"len(v) > {limit} or not _SAFE_ID(v)"
        elif name in FREE_TEXT_FIELDS:
            bad = "deep and _CONTROL_IN_TEXT(v)"
        else:
            bad = f"len(v) > {limit} or deep and _CONTROL(v)" if limit else "deep and _CONTROL(v)"
        return [
            f"if type(v) is not str: _fail_type({n}, 'a string', v)",
            f"if {bad}: _check_text({n}, v, L_{name})",
        ]
    if base is int:
        lo, hi = env[f"B_{name}"] = INT64 if name in INT64_FIELDS else INT32
        return [f"if type(v) is not int or not {lo} <= v <= {hi}: _fail_int({n}, v, B_{name})"]
    if base is float:
        check = [f"if type(v) is not float or v - v != 0.0: v = _number({n}, v)"]
        if name in NONNEGATIVE_FIELDS:
            check.append(f"if v < 0: _fail_negative({n}, v)")
        return check
    if base is datetime:
        return [f"v = _time({n}, v)"]
    if origin is Literal:
        env[f"A_{name}"] = allowed = typing.get_args(base)
        env[f"S_{name}"] = frozenset(allowed)
        return [f"if type(v) is not str or v not in S_{name}: _fail_choice({n}, A_{name}, v)"]
    if base is dict or origin is dict:
        # Nested strings are checked when the caller asks (deep=True): ingest asks only for
        # lines that could hold a control character at all (an escape, DEL or a C1 byte).
        return [f"if type(v) is not dict: _fail_type({n}, 'an object', v)", f"if deep: _check_nested({n}, v)"]
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
        "_texts": _texts, "RecordError": RecordError, "_SAFE_ID": _SAFE_ID, "_CONTROL": _CONTROL,
        "_CONTROL_IN_TEXT": _CONTROL_IN_TEXT, "_check_nested": _check_nested, "_fail_negative": _fail_negative,
        "KEYS": frozenset([*ENVELOPE, *(f.name for f in dataclasses.fields(cls))]),
    }  # fmt: skip
    body = [
        "def validate(obj, deep=True):",
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
    validate: Callable[..., dict[str, Any]]
    times: tuple[str, ...]  # the datetime fields, for the clock check
    strings: tuple[str, ...]  # fields that are or may hold strings, for check_record


def _build_spec(cls: type[Record]) -> _Spec:
    required = tuple(
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    hints = typing.get_type_hints(cls)
    times = tuple(f.name for f in dataclasses.fields(cls) if _is_optional(hints[f.name])[1] is datetime)
    strings = tuple(
        f.name for f in dataclasses.fields(cls)
        if _is_optional(hints[f.name])[1] is str or typing.get_origin(_is_optional(hints[f.name])[1]) in (dict, list)
        or _is_optional(hints[f.name])[1] is dict
    )  # fmt: skip
    return _Spec(cls, required, _compile_validator(cls), times, strings)


_SPECS: dict[str, _Spec] = {cls.KIND: _build_spec(cls) for cls in RECORD_TYPES}


def validate_json_dict(obj: Any, deep: bool = True, not_after: datetime | None = None) -> tuple[str, dict[str, Any]]:
    """Check one decoded JSON object against its schema; returns (kind, field values).

    The values are what the record's constructor takes (times parsed, defaults filled in).
    Ingest stops here rather than building dataclasses it would take apart again.

    Args:
        deep: also check the strings inside object fields (case, telemetry, ...) for control
            characters; a caller that knows the JSON text holds no escape may skip it.
        not_after: refuse times later than this (records stamped in the future).
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
    values = spec.validate(obj, deep)
    if not_after is not None:
        for name in spec.times:
            at = values[name]
            if at is not None and at > not_after:
                raise RecordError(
                    f"field '{name}' is {format_time(at)}, later than this machine's clock allows "
                    f"({format_time(not_after)}, {int(FUTURE_SKEW.total_seconds())} s of skew): check the producer's clock"
                )
    return kind, values


def check_record(record: Record) -> None:
    """The string rules of ingest for a record built in this process (ids, control characters).

    Raises RecordError naming the field: a record made here from a hostile device name or a
    probe's output must not reach the store either.
    """
    for name in _SPECS[record.KIND].strings:
        value = getattr(record, name)
        if value is None:
            continue
        if type(value) is str:
            if (not _SAFE_ID(value)) if name in SAFE_ID_FIELDS else _CONTROL_IN_TEXT(value) if name in FREE_TEXT_FIELDS else _CONTROL(value):
                _check_text(name, value, None)
        else:
            _check_nested(name, value)


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
