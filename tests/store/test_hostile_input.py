"""Ingest under hostile input, on SQLite and PostgreSQL: what a broken or malicious producer
sends is refused with ``FILE:LINE``, exit 2 and nothing written; what is valid is stored
exactly (no digit lost, no evidence overwritten)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import text
from tests.store import samples
from tests.store.samples import counts, run

from sdc.records import RECORD_TYPES, RecordError, format_time, utcnow
from sdc.store import Store
from sdc.store.engine import make_engine


def ledger_objects(n_results: int = 3) -> list[dict]:
    return [json.loads(r.to_json()) for r in samples.one_of_each(n_results)]


def write(path, objects) -> str:
    path.write_text("".join(json.dumps(o) + "\n" for o in objects))
    return str(path)


def refused(url, path, line: int, message: str) -> None:
    result = run(url, "ingest", path)
    assert result.exit_code == 2, result.output
    assert f"{path}:{line}: " in result.output and message in result.output, result.output
    assert "nothing was written" in result.output
    assert sum(counts(url).values()) == 0


def _string_fields() -> list[tuple[str, str]]:
    objects = {o["record"]: o for o in ledger_objects()}
    out = []
    for cls in RECORD_TYPES:
        for name, value in objects[cls.KIND].items():
            if name != "record" and isinstance(value, str) and not name.endswith(("_at", "first_seen", "last_seen")) and name != "at":
                enum = name in ("status", "diagnosis", "severity", "from_state", "to_state")
                if not enum and (name != "kind" or cls.KIND == "job_event"):  # choices refuse anything else
                    out.append((cls.KIND, name))
    return out


STRING_FIELDS = _string_fields()


@pytest.mark.parametrize("kind,name", STRING_FIELDS, ids=[f"{k}.{n}" for k, n in STRING_FIELDS])
@pytest.mark.parametrize("control", ["\x1e", "\x1f", "\x1b", "\x00", "\x85"], ids=["RS", "US", "ESC", "NUL", "NEL"])
def test_control_characters_in_any_string_field_are_refused(kind, name, control, tmp_path, sdc_env):
    """The separators the evidence loader once used, a terminal escape, NUL, a C1 control."""
    url = f"sqlite:///{tmp_path / 'sdc.db'}"
    assert run(url, "db", "upgrade").exit_code == 0
    objects = ledger_objects()
    line = next(i for i, o in enumerate(objects, 1) if o["record"] == kind)
    objects[line - 1][name] = "x" + control + "y"
    refused(url, write(tmp_path / "hostile.jsonl", objects), line, f"field '{name}' contains")


@pytest.mark.parametrize("field_name", ["case", "telemetry"])
def test_control_characters_inside_objects_and_their_keys_are_refused(field_name, migrated_url, tmp_path, sdc_env):
    for hostile in ({"name": "gemm\x1e7"}, {"a\x1fb": 1}, {"deep": [{"x": "\x1b]0;owned\x07"}]}):
        objects = ledger_objects()
        objects[3][field_name] = hostile
        refused(migrated_url, write(tmp_path / "hostile.jsonl", objects), 4, f"field '{field_name}")


def test_free_text_keeps_newlines_and_tabs(migrated_url, tmp_path, sdc_env):
    objects = ledger_objects()
    objects[3]["message"] = "2 elements wrong:\n\tat [0, 3]\n\tat [1, 7]"
    result = run(migrated_url, "ingest", write(tmp_path / "ok.jsonl", objects))
    assert result.exit_code == 0, result.output


def test_a_record_built_in_process_is_held_to_the_same_rules(migrated_url, tmp_path):
    chips = samples.chips(1)
    sweep = samples.sweep()
    bad = samples.results(sweep.sweep_id, chips, 1)[0]
    import dataclasses

    bad = dataclasses.replace(bad, digest="00\x1e11")
    store = Store(migrated_url, tmp_path / "outbox")
    with pytest.raises(RecordError, match="field 'digest' contains control character U\\+001E"):
        store.write([*chips, sweep, bad])
    store.dispose()
    assert sum(counts(migrated_url).values()) == 0


@pytest.mark.parametrize(
    "kind,name,value",
    [
        ("chip", "chip_id", "GPU-1;reboot"),
        ("chip", "chip_id", "GPU 1"),
        ("chip", "host", "node-ä01"),
        ("chip", "host", "$(touch /tmp/x)"),
        ("sweep", "host", "node`id`"),
        ("probe_result", "chip_id", "GPU/../1"),
        ("job_event", "host", "a b"),
        ("chip", "chip_id", ""),
    ],
)
def test_chip_ids_and_host_names_outside_the_safe_set_are_refused(kind, name, value, migrated_url, tmp_path, sdc_env):
    objects = ledger_objects()
    line = next(i for i, o in enumerate(objects, 1) if o["record"] == kind)
    objects[line - 1][name] = value
    message = f"field '{name}' is empty" if not value else f"field '{name}' contains U+"
    refused(migrated_url, write(tmp_path / "unsafe.jsonl", objects), line, message)


def test_a_transition_of_a_chip_never_seen_is_refused(migrated_url, tmp_path, sdc_env):
    objects = ledger_objects()
    line = next(i for i, o in enumerate(objects, 1) if o["record"] == "quarantine_event")
    objects[line - 1]["chip_id"] = "GPU-nobody-has-seen"
    refused(migrated_url, write(tmp_path / "ghost.jsonl", objects), line, "names chip 'GPU-nobody-has-seen', which is neither")


def test_events_stamped_in_the_future_are_refused(migrated_url, tmp_path, sdc_env):
    objects = ledger_objects()
    objects[3]["observed_at"] = format_time(utcnow() + timedelta(hours=1))
    refused(migrated_url, write(tmp_path / "future.jsonl", objects), 4, "field 'observed_at' is ")
    # A clock a little ahead (within the skew) is a fleet, not an error.
    objects[3]["observed_at"] = format_time(utcnow() + timedelta(seconds=30))
    assert run(migrated_url, "ingest", write(tmp_path / "skew.jsonl", objects)).exit_code == 0


@pytest.mark.parametrize("change", [{"timings": [1e-3, -1e-3, 2e-3]}, {"throughput": -5.0}])
def test_negative_timings_and_throughputs_are_refused(change, migrated_url, tmp_path, sdc_env):
    objects = ledger_objects()
    objects[3].update(change)
    name = next(iter(change))
    refused(migrated_url, write(tmp_path / "negative.jsonl", objects), 4, f"field '{name}")


@pytest.mark.parametrize("when", ["9999-12-31T23:00:00-05:00", "0001-01-01T01:00:00+05:00"])
def test_times_that_overflow_in_utc_are_refused_with_the_line(when, migrated_url, tmp_path, sdc_env):
    objects = ledger_objects()
    objects[3]["observed_at"] = when
    refused(migrated_url, write(tmp_path / "overflow.jsonl", objects), 4, "outside the years 1 to 9999 in UTC")


def test_large_integers_inside_objects_keep_every_digit(migrated_url, tmp_path, sdc_env):
    serial = 123456789012345678901234567890
    objects = ledger_objects()
    objects[3]["telemetry"] = {"serial": serial, "neg": -(2**70), "ok": 2**40}
    assert run(migrated_url, "ingest", write(tmp_path / "big.jsonl", objects)).exit_code == 0
    exported = run(migrated_url, "export", "--kind", "probe_result").output.splitlines()
    telemetry = [json.loads(line)["telemetry"] for line in exported if str(serial) in line]
    assert telemetry == [{"serial": serial, "neg": -(2**70), "ok": 2**40}]


def test_identical_duplicates_are_no_ops_and_conflicting_ones_are_refused(migrated_url, tmp_path, sdc_env):
    objects = ledger_objects()
    path = write(tmp_path / "first.jsonl", objects)
    assert run(migrated_url, "ingest", path).exit_code == 0
    stored = counts(migrated_url)
    assert run(migrated_url, "ingest", path).exit_code == 0  # the same content again: a no-op
    assert counts(migrated_url) == stored

    changed = json.loads(json.dumps(objects))
    changed[3]["digest"] = "f" * 64  # same result_id, another digest
    path2 = write(tmp_path / "second.jsonl", changed)
    result = run(migrated_url, "ingest", path2)
    assert result.exit_code == 2, result.output
    assert f"{path2}:4: result_id {objects[3]['result_id']} is already stored" in result.output
    assert "nothing was written" in result.output
    engine = make_engine(migrated_url)
    with engine.connect() as connection:
        digest = connection.execute(
            text("SELECT digest FROM probe_results WHERE result_id = :r"), {"r": objects[3]["result_id"]}
        ).scalar_one()
    engine.dispose()
    assert digest == objects[3]["digest"]  # the evidence stored first is untouched
    assert counts(migrated_url) == stored


def test_a_conflict_inside_one_file_is_refused(migrated_url, tmp_path, sdc_env):
    objects = ledger_objects()
    twin = dict(objects[3], status="mismatch" if objects[3]["status"] == "ok" else "ok")
    objects.append(twin)
    path = write(tmp_path / "twins.jsonl", objects)
    result = run(migrated_url, "ingest", path)
    assert result.exit_code == 2, result.output
    assert f"{path}:{len(objects)}: result_id {twin['result_id']}" in result.output
    assert sum(counts(migrated_url).values()) == 0
    objects[-1] = dict(objects[3])  # an identical twin is fine
    assert run(migrated_url, "ingest", write(tmp_path / "same.jsonl", objects)).exit_code == 0


def test_results_before_their_chips_in_the_file_are_stored(migrated_url, tmp_path, sdc_env):
    objects = ledger_objects()
    parents = [o for o in objects if o["record"] in ("chip", "sweep")]
    rest = [o for o in objects if o["record"] not in ("chip", "sweep")]
    assert run(migrated_url, "ingest", write(tmp_path / "children-first.jsonl", rest + parents)).exit_code == 0
    assert sum(counts(migrated_url).values()) == len(objects)


def test_closed_stdin_is_an_error_not_a_crash(tmp_path, sdc_env):
    url = f"sqlite:///{tmp_path / 'sdc.db'}"
    env = {**os.environ, "SDC_DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "sdc", "db", "upgrade"], env=env, check=True, capture_output=True)
    proc = subprocess.run(
        [sys.executable, "-m", "sdc", "ingest", "-"], env=env, capture_output=True, text=True,
        preexec_fn=lambda: os.close(0),  # started with no standard input at all (fd 0 shut)
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "<stdin>: standard input is closed" in proc.stderr
    assert "Traceback" not in proc.stderr
