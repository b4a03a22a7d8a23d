"""The record format: JSON lines round trip, validation messages, and JSON Schemas in sync."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from tests.store import samples

from sdc.records import RECORD_TYPES, RecordError, canonical_json, from_json
from sdc.records.schema import json_schema, render
from sdc.store.writer import _cached_canonical_text, _canonical_text

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schema"


def test_every_record_round_trips_through_json():
    for record in samples.one_of_each():
        assert from_json(record.to_json()) == record
        assert json.loads(record.to_json())["record"] == record.KIND


@pytest.mark.parametrize("cls", RECORD_TYPES, ids=lambda c: c.KIND)
def test_schema_files_match_the_generated_schemas(cls):
    path = SCHEMA_DIR / f"{cls.KIND}.json"
    assert path.read_text() == render(cls), (
        f"{path} is out of date: run 'python -m sdc.records --write-schemas docs/schema'"
    )


def test_exported_lines_validate_against_the_schema_files():
    validators = {
        cls.KIND: jsonschema.Draft202012Validator(json.loads((SCHEMA_DIR / f"{cls.KIND}.json").read_text()))
        for cls in RECORD_TYPES
    }
    for record in samples.one_of_each():
        obj = json.loads(record.to_json())
        validators[record.KIND].validate(obj)


# What the validator refuses, the schema refuses too (where JSON Schema can say it).
REFUSED = [
    ({"status": "fine"}, "field 'status' must be one of ok, mismatch, error, timeout, skipped; got 'fine'"),
    ({"seed": "7"}, "field 'seed' must be an integer, got string"),
    ({"seed": True}, "field 'seed' must be an integer, got boolean"),
    ({"seed": 2**63}, "field 'seed' is 9223372036854775808, outside"),
    ({"repeats": 2**31}, "field 'repeats' is 2147483648, outside"),
    ({"max_abs_err": "0.1"}, "field 'max_abs_err' must be a number, got string"),
    ({"timings": [0.1, None]}, "field 'timings[]' must be a number, got null"),
    ({"case": [1]}, "field 'case' must be an object, got array"),
    ({"chip_id": "x" * 129}, "field 'chip_id' is 129 characters long, at most 128 allowed"),
    ({"observed_at": "yesterday"}, "field 'observed_at' is not an ISO 8601 time: 'yesterday'"),
    ({"colour": "blue"}, "unknown field 'colour' in probe_result record"),
    ({"record": "probe"}, "field 'record' must be one of chip, sweep, probe_result"),
]


@pytest.mark.parametrize("change,message", REFUSED, ids=[m.split(",")[0][:40] for _, m in REFUSED])
def test_invalid_fields_are_named(change, message):
    record = samples.one_of_each()[3]
    assert record.KIND == "probe_result"
    obj = {**json.loads(record.to_json()), **change}
    with pytest.raises(RecordError, match="^" + _escape(message)):
        from_json(json.dumps(obj))
    schema_ok = jsonschema.Draft202012Validator(json_schema(type(record))).is_valid(obj)
    if "observed_at" not in change:  # the schema's date-time 'format' is advisory
        assert not schema_ok


def test_missing_field_and_nul_and_nan_are_refused():
    obj = json.loads(samples.one_of_each()[3].to_json())
    del obj["chip_id"]
    with pytest.raises(RecordError, match="field 'chip_id' missing from probe_result record"):
        from_json(json.dumps(obj))
    obj = json.loads(samples.one_of_each()[3].to_json())
    obj["probe"] = "gemm\x00"
    with pytest.raises(RecordError, match=r"field .probe. contains control character U\+0000 \(NUL\)"):
        from_json(json.dumps(obj))
    obj["probe"], obj["error_bound"] = "gemm", "__NAN__"
    with pytest.raises(RecordError, match="NaN is not allowed"):
        from_json(json.dumps(obj).replace('"__NAN__"', "NaN"))


def test_writer_case_key_equals_canonical_json():
    cases = [r.case for r in samples.one_of_each() if r.KIND == "probe_result"]
    cases += [{"b": [1.5e-300, -0.0, 10**20], "a": "ü\u2028", "c": {"z": None, "y": True}}]
    for case in cases:
        assert _canonical_text(case) == canonical_json(case)
        assert _cached_canonical_text(case) == canonical_json(case)
        assert _cached_canonical_text(case) == canonical_json(case)  # second time from the cache


def _escape(text: str) -> str:
    import re

    return re.escape(text)
