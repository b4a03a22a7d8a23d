"""Checking decoded JSON against the record declarations, with ``FILE:LINE``-ready messages.

The field types in ``sdc.records.types`` are the one definition: msgspec converts a decoded
object into its record class and enforces them (types, lengths, ranges, choices, the safe set
of chip ids and host names, non-negative timings). This module adds what a type cannot say
(unknown fields, control characters anywhere inside a record, times ahead of the clock) and
turns msgspec's terse errors into the sentences ingest prints: ``field 'seed' must be an
integer, got string``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Union

import msgspec

from sdc.records.types import (
    BY_KIND,
    INT32,
    INT64,
    INT64_FIELDS,
    SAFE_ID_CHARACTERS,
    SCHEMA_VERSION,
    Record,
    RecordError,
    _utc,
    format_time,
)

ENVELOPE = ("record", "schema_version")
FREE_TEXT_FIELDS = frozenset({"message", "summary", "reason"})
SAFE_ID_FIELDS = frozenset({"chip_id", "host"})
# How far ahead of this machine's clock an ingested time may be (clocks of a fleet drift).
FUTURE_SKEW = timedelta(minutes=5)

_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL = _CONTROL_RE.search
_CONTROL_IN_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]").search
_SAFE_ID = re.compile(r"[A-Za-z0-9._:@+=-]+\Z").match
_MISSING = object()


class _Kind:
    """What validation needs of one record class, worked out once."""

    def __init__(self, cls: type[Record]):
        self.cls = cls
        self.hints = typing.get_type_hints(cls)
        self.names = tuple(f.name for f in dataclasses.fields(cls))
        self.keys = frozenset([*ENVELOPE, *self.names])
        self.strings = tuple(
            n for n in self.names if _base(self.hints[n]) in (str, dict, list) or typing.get_origin(_base(self.hints[n])) in (dict, list)
        )


def _base(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint


_KINDS: dict[str, _Kind] = {kind: _Kind(cls) for kind, cls in BY_KIND.items()}


def _line_shape(cls: type[Record]) -> type[msgspec.Struct]:
    """The record's fields as a msgspec Struct, built from its declaration (same names, types, defaults).

    Ingest decodes each line straight into one of these (tag ``record``, unknown fields
    refused): one C call parses and validates the line, and the writer reads the row's values
    off it by name, without building the record itself.
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    fields: list[tuple] = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            fields.append((f.name, hints[f.name], f.default))
        elif f.default_factory is not dataclasses.MISSING:
            fields.append((f.name, hints[f.name], msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, hints[f.name]))
    fields.append(("schema_version", Annotated[int, msgspec.Meta(ge=1, le=SCHEMA_VERSION)], SCHEMA_VERSION))
    namespace = {"KIND": cls.KIND, "ID_FIELD": cls.ID_FIELD, "RECORD": cls}
    return msgspec.defstruct(
        f"{cls.__name__}Line", fields, tag_field="record", tag=cls.KIND, forbid_unknown_fields=True, namespace=namespace
    )


_LINE_DECODER = msgspec.json.Decoder(Union[tuple(_line_shape(cls) for cls in BY_KIND.values())])  # type: ignore[misc]
_ANY_JSON = msgspec.json.Decoder()


def validate_line(line: bytes, deep: bool = True, not_after: datetime | None = None) -> Any:
    """One JSON line, parsed and checked against its record's declaration; raises RecordError.

    Returns the line's fields (``.KIND`` names the kind, ``as_record`` builds the record).

    Args:
        deep: search every string for control characters (see ``validate_json_dict``).
        not_after: refuse times later than this.
    """
    try:
        fields = _LINE_DECODER.decode(line)
    except msgspec.ValidationError as exc:
        try:
            obj = _ANY_JSON.decode(line)
        except msgspec.DecodeError as syntax:  # e.g. a number beyond a 64-bit float
            raise RecordError(_syntax_error(line, str(syntax))) from None
        raise RecordError(_explain_line(str(exc), obj)) from None
    except msgspec.DecodeError as exc:
        raise RecordError(_syntax_error(line, str(exc))) from None
    cls = fields.RECORD
    for name in cls.TIME_FIELDS:
        at = getattr(fields, name)
        if at is not None and at.tzinfo is not timezone.utc:
            setattr(fields, name, _utc(name, at))
    if deep:
        check_record(fields)
    if not_after is not None:
        _check_not_after(cls, fields, not_after)
    return fields


def as_record(fields: Any) -> Record:
    """The record of a line ``validate_line`` checked."""
    cls = fields.RECORD
    return cls(*(getattr(fields, name) for name in _KINDS[cls.KIND].names))


def _explain_line(message: str, obj: Any) -> str:
    if type(obj) is not dict:
        return f"a record must be a JSON object, got {_type_name(obj)}"
    try:
        validate_json_dict(obj)  # the envelope's own messages: record, schema_version, unknown fields
    except RecordError as exc:
        return str(exc)
    return message  # pragma: no cover - both paths read the same declaration


def _syntax_error(line: bytes, fast_error: str) -> str:
    # The standard library names NaN and Infinity and points at the column; msgspec rejects
    # a few more things (lone surrogates, infinite literals) and then says so.
    try:
        loads(line)
    except RecordError as exc:
        return str(exc)
    except Exception:  # anything else the standard library trips on: msgspec's words
        pass
    return f"not valid JSON: {fast_error}"


def _check_not_after(cls: type[Record], record: Any, not_after: datetime) -> None:
    for name in cls.TIME_FIELDS:
        at = getattr(record, name)
        if at is not None and at > not_after:
            raise RecordError(
                f"field '{name}' is {format_time(at)}, later than this machine's clock allows "
                f"({format_time(not_after)}, {int(FUTURE_SKEW.total_seconds())} s of skew): check the producer's clock"
            )


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _char_name(char: str) -> str:
    return f"U+{ord(char):04X}" + (" (NUL)" if char == "\x00" else "")


def _printable(text: str) -> str:
    return _CONTROL_RE.sub("?", text)


def _check_text(name: str, value: str, limit: int | None) -> None:
    if limit is not None and len(value) > limit:
        raise RecordError(f"field '{name}' is {len(value):,} characters long, at most {limit} allowed")
    base = name.partition("[")[0].partition(".")[0].partition(" ")[0]
    if base in SAFE_ID_FIELDS:
        bad = next((c for c in value if not _SAFE_ID(c)), None)
        if bad is None and value.startswith("-"):
            raise RecordError(
                f"field '{name}' starts with '-', which would read as an option in the commands sdc prints "
                "(see README, Records)"
            )
        if bad is None:
            raise RecordError(f"field '{name}' is empty")
        raise RecordError(
            f"field '{name}' contains {_char_name(bad)}, outside the safe set {SAFE_ID_CHARACTERS} "
            "for chip ids and host names (see README, Records)"
        )
    _check_control(name, value)


def _check_control(name: str, value: str) -> None:
    found = (_CONTROL_IN_TEXT if name in FREE_TEXT_FIELDS else _CONTROL)(value)
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
            _check_nested(f"{name}.{key}" if type(key) is str else name, item)
    elif type(value) is list:
        for item in value:
            _check_nested(f"{name}[]", item)


def check_record(record: Record) -> None:
    """No string a record holds (nested ones too) has a control character; raises RecordError.

    Ingest runs it for lines whose JSON text could hold a control character at all; the
    store runs it for records built in this process (from a device name, a probe's output).
    The safe set of chip ids and host names is the declaration's (enforced on ingest).
    """
    for name in _KINDS[record.KIND].strings:
        value = getattr(record, name)
        if value is None:
            continue
        if type(value) is str:
            if (_CONTROL_IN_TEXT if name in FREE_TEXT_FIELDS else _CONTROL)(value):
                _check_control(name, value)
        else:
            _check_nested(name, value)


def validate_json_dict(obj: Any, deep: bool = True, not_after: datetime | None = None) -> Record:
    """Check one decoded JSON object against its record declaration; returns the record.

    Args:
        deep: also search every string for control characters; a caller that knows the JSON
            text holds no escape, DEL or C1 byte may skip it (ids are checked regardless).
        not_after: refuse times later than this (records stamped in the future).
    """
    if type(obj) is not dict:
        raise RecordError(f"a record must be a JSON object, got {_type_name(obj)}")
    kind = obj.get("record", _MISSING)
    spec = _KINDS.get(kind) if type(kind) is str else None
    if spec is None:
        if kind is _MISSING:
            raise RecordError(f"field 'record' missing: it names the record type ({', '.join(_KINDS)})")
        raise RecordError(f"field 'record' must be one of {', '.join(_KINDS)}; got {_printable(str(kind)[:40])!r}")
    version = obj.get("schema_version", SCHEMA_VERSION)
    if version is not SCHEMA_VERSION and (type(version) is not int or not 1 <= version <= SCHEMA_VERSION):
        raise RecordError(f"field 'schema_version' must be an integer from 1 to {SCHEMA_VERSION}; got {version!r}")
    extra = obj.keys() - spec.keys
    if extra:
        raise RecordError(f"unknown field '{_printable(sorted(extra)[0][:40])}' in {kind} record (see docs/schema/{kind}.json)")
    try:
        record = msgspec.convert(obj, spec.cls)  # strict: no '7' for 7, no true for 1
    except msgspec.ValidationError as exc:
        raise RecordError(explain(str(exc), obj, spec)) from None
    if deep:
        check_record(record)
    if not_after is not None:
        _check_not_after(spec.cls, record, not_after)
    return record


_EXPECTED = {"int": "an integer", "float": "a number", "str": "a string", "object": "an object", "array": "an array",
             "datetime": "an ISO 8601 time string", "bool": "a boolean"}  # fmt: skip
_GOT = {"int": "integer", "float": "number", "str": "string", "bool": "boolean", "null": "null", "array": "array", "object": "object"}
_AT = re.compile(r"^(?P<text>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def explain(message: str, obj: dict[str, Any], spec: _Kind) -> str:
    """msgspec's ``Expected `int`, got `str` - at `$.seed``` as ``field 'seed' must be an integer, got string``."""
    match = _AT.match(message)
    text, path = match["text"], match["path"] or ""
    name = re.match(r"\.?([A-Za-z_]\w*)", path)
    field_name = name.group(1) if name else ""
    shown = field_name + ("[]" if "[" in path[len(field_name) + 1 :] else "")
    value = obj.get(field_name)
    if shown.endswith("[]") and type(value) is list:
        index = re.search(r"\[(\d+)\]", path)
        value = value[int(index.group(1))] if index and int(index.group(1)) < len(value) else value
    kind = spec.cls.KIND
    if text.startswith("Object missing required field"):
        missing = text.split("`")[1]
        return f"field '{missing}' missing from {kind} record (see docs/schema/{kind}.json)"
    if text.startswith("Invalid enum value"):
        allowed = typing.get_args(_base(spec.hints[field_name]))
        return f"field '{shown}' must be one of {', '.join(allowed)}; got {_printable(str(value)[:40])!r}"
    if "matching regex" in text:
        try:
            _check_text(shown, value, None)
        except RecordError as exc:
            return str(exc)
    if "of length <=" in text:
        limit = int(text.rsplit("<=", 1)[1])
        return f"field '{shown}' is {len(value):,} characters long, at most {limit} allowed"
    if text.startswith("Expected `int` >=") or text.startswith("Expected `int` <="):
        lo, hi = INT64 if field_name in INT64_FIELDS else INT32
        return f"field '{shown}' is {value}, outside {lo}..{hi}"
    if text.startswith("Expected `float` >="):
        return f"field '{shown}' is {value!r}; a time or a rate is never negative"
    if text.startswith("Number out of range"):
        return f"field '{shown}' is too large for a 64-bit float"
    if text.startswith("Invalid RFC3339"):
        return f"field '{shown}' is not an ISO 8601 time: {_printable(str(value)[:40])!r}"
    expected = re.match(r"Expected `([^`]*)`, got `([^`]*)`", text)
    if expected and shown:
        want = expected.group(1).split(" | ")[0]
        return f"field '{shown}' must be {_EXPECTED.get(want, want)}, got {_GOT.get(expected.group(2), expected.group(2))}"
    return f"field '{shown}': {text}" if shown and not text.startswith("field '") else text


def from_json_dict(obj: Any) -> Record:
    """Validate one decoded JSON object and build its record; raises RecordError."""
    return validate_json_dict(obj)


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


__all__ = [
    "ENVELOPE", "FREE_TEXT_FIELDS", "FUTURE_SKEW", "SAFE_ID_FIELDS", "as_record", "check_record", "explain",
    "from_json", "from_json_dict", "loads", "validate_json_dict", "validate_line",
]  # fmt: skip
