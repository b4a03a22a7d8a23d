"""JSON Schema files for the records, written from their one declaration by msgspec.

``python -m sdc.records --write-schemas docs/schema`` writes one file per record kind; a test
keeps the committed files equal to what this module generates. msgspec gives each record's
properties, constraints and required fields; this module adds the JSON-lines envelope
(``record``, ``schema_version``) and refuses unknown properties, as ingest does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from sdc.records.types import RECORD_TYPES, SCHEMA_VERSION, Record


def json_schema(cls: type[Record]) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one record kind's JSON lines."""
    generated = msgspec.json.schema(cls)
    body = generated["$defs"][generated["$ref"].rsplit("/", 1)[1]]
    properties: dict[str, Any] = {
        "record": {"const": cls.KIND},
        "schema_version": {"type": "integer", "minimum": 1, "maximum": SCHEMA_VERSION},
    }
    for name, schema in body["properties"].items():
        schema.pop("default", None)  # defaults are the producer's business, not a rule
        properties[name] = schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://sdc.dev/schema/{cls.KIND}.json",
        "title": cls.__name__,
        "description": (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " "),
        "type": "object",
        "properties": properties,
        "required": ["record", *body.get("required", [])],
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
