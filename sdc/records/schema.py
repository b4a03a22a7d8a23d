"""JSON Schema files for the records, generated from the same type hints as their validators.

``python -m sdc.records --write-schemas docs/schema`` writes one file per record kind; a test
keeps the committed files equal to what this module generates.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sdc.records.types import RECORD_TYPES, SCHEMA_VERSION, Record
from sdc.records.validation import (
    _SPECS,
    FREE_TEXT_FIELDS,
    FREE_TEXT_PATTERN,
    NONNEGATIVE_FIELDS,
    SAFE_ID_CHARACTERS,
    SAFE_ID_FIELDS,
    SAFE_ID_PATTERN,
    TEXT_PATTERN,
    INT32,
    INT64,
    INT64_FIELDS,
    MAX_LENGTH,
    _is_optional,
)


def _schema_for(name: str, hint: Any) -> dict[str, Any]:
    optional, base = _is_optional(hint)
    origin = typing.get_origin(base)
    if base is str:
        schema: dict[str, Any] = {"type": "string"}
        if name in MAX_LENGTH:
            schema["maxLength"] = MAX_LENGTH[name]
        schema["pattern"] = (
            SAFE_ID_PATTERN if name in SAFE_ID_FIELDS else FREE_TEXT_PATTERN if name in FREE_TEXT_FIELDS else TEXT_PATTERN
        )
        if name in SAFE_ID_FIELDS:
            schema["description"] = (
                f"Safe character set {SAFE_ID_CHARACTERS}: it reaches shell commands, NHC and Slurm lines"
            )
    elif base is int:
        lo, hi = INT64 if name in INT64_FIELDS else INT32
        schema = {"type": "integer", "minimum": lo, "maximum": hi}
    elif base is float:
        schema = {"type": "number"}
        if name in NONNEGATIVE_FIELDS:
            schema["minimum"] = 0
    elif base is datetime:
        schema = {"type": "string", "format": "date-time"}
    elif origin is Literal:
        schema = {"enum": list(typing.get_args(base))}
    elif base is dict or origin is dict:
        schema = {"type": "object"}
    elif origin is list:
        schema = {"type": "array", "items": _schema_for(name, typing.get_args(base)[0])}
    else:  # pragma: no cover
        raise TypeError(hint)
    if optional:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def json_schema(cls: type[Record]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one record kind's JSON lines."""
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {
        "record": {"const": cls.KIND},
        "schema_version": {"type": "integer", "minimum": 1, "maximum": SCHEMA_VERSION},
    }
    for f in dataclasses.fields(cls):
        properties[f.name] = _schema_for(f.name, hints[f.name])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://sdc.dev/schema/{cls.KIND}.json",
        "title": cls.__name__,
        "description": (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " "),
        "type": "object",
        "properties": properties,
        "required": ["record", *_SPECS[cls.KIND].required],
        "additionalProperties": False,
    }


def render(cls: type[Record]) -> str:
    return json.dumps(json_schema(cls), indent=2) + "\n"


def write_schemas(directory: str | Path) -> list[str]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for cls in RECORD_TYPES:
        path = out / f"{cls.KIND}.json"
        path.write_text(render(cls))
        written.append(str(path))
    return written


def main(argv: list[str]) -> int:
    if argv[:1] != ["--write-schemas"] or len(argv) > 2:
        print("usage: python -m sdc.records --write-schemas [DIR]", file=sys.stderr)
        return 2
    for path in write_schemas(argv[1] if len(argv) > 1 else "docs/schema"):
        print(path)
    return 0
