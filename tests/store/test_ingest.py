"""``sdc ingest`` and ``sdc export`` through the real command line, on SQLite and PostgreSQL.

Bad input of every sort gives ``FILE:LINE: what is wrong``, exit code 2 and no rows at all;
good input is stored once however often it is ingested, and export -> ingest reproduces it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import select
from tests.store import samples
from tests.store.samples import counts, run

from sdc.store.engine import make_engine
from sdc.store.migrate import upgrade
from sdc.store.models import ROW_TYPES


def good_lines(n_results: int = 5) -> list[str]:
    return [r.to_json() for r in samples.one_of_each(n_results)]


def probe_result_obj() -> dict:
    return json.loads(good_lines()[3])


def with_bad(bad: str, at: int = 4) -> str:
    """Good lines with ``bad`` as line ``at`` (1-based)."""
    lines = good_lines()
    lines.insert(at - 1, bad)
    return "\n".join(lines) + "\n"


def _obj(**change) -> str:
    obj = probe_result_obj()
    obj.update(change)
    return json.dumps(obj)


def _missing(name: str) -> str:
    obj = probe_result_obj()
    del obj[name]
    return json.dumps(obj)


MALFORMED = {
    "invalid-json": (with_bad('{"record": "chip", "chip_id": '), 4, "not valid JSON"),
    "missing-field": (with_bad(_missing("chip_id")), 4, "field 'chip_id' missing from probe_result record"),
    "wrong-type": (with_bad(_obj(seed="7")), 4, "field 'seed' must be an integer, got string"),
    "unknown-status": (
        with_bad(_obj(status="corrupt")),
        4,
        "field 'status' must be one of ok, mismatch, error, timeout, skipped; got 'corrupt'",
    ),
    "nan": (with_bad(_obj(max_abs_err="@").replace('"@"', "NaN")), 4, "NaN is not allowed in sdc records"),
    "infinity": (with_bad(_obj(throughput="@").replace('"@"', "1e999")), 4, "not valid JSON"),
    "ten-megabyte-line": (
        with_bad(_obj(message="x" * (10 << 20))),
        4,
        "bytes, over the 1,048,576-byte limit",
    ),
    "binary": (None, 1, "binary data (NUL byte); expected JSON lines text"),
    "empty": ("", 1, "empty file: no records to ingest"),
    "blank-lines-only": ("\n\n  \n", 1, "empty file: no records to ingest"),
    "not-utf8": (with_bad('{"record": "chip", "host": "\xff"}'.encode("latin-1").decode("latin-1")), 4, "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_input_is_refused_with_file_and_line(case, migrated_url, tmp_path, sdc_env):
    content, line, message = MALFORMED[case]
    path = tmp_path / f"{case}.jsonl"
    if case == "binary":
        path.write_bytes(bytes(range(256)) * 64)
    elif case == "not-utf8":
        path.write_bytes(content.encode("latin-1"))
    else:
        path.write_text(content)
    result = run(migrated_url, "ingest", str(path))
    assert result.exit_code == 2, result.output
    assert f"{path}:{line}: " in result.output, result.output
    assert message in result.output, result.output
    assert "nothing was written" in result.output
    assert sum(counts(migrated_url).values()) == 0


def test_every_bad_line_is_listed(migrated_url, tmp_path, sdc_env):
    lines = good_lines()
    lines[4] = _obj(seed=-1.5)
    lines[6] = _obj(status="bad")
    lines.append("[]")
    path = tmp_path / "three.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = run(migrated_url, "ingest", str(path))
    assert result.exit_code == 2
    for number in (5, 7, len(lines)):
        assert f"{path}:{number}: " in result.output
    assert "ingest: 3 problem(s); nothing was written" in result.output
    assert sum(counts(migrated_url).values()) == 0


def test_results_naming_an_unknown_chip_are_refused(migrated_url, tmp_path, sdc_env):
    path = tmp_path / "orphans.jsonl"
    path.write_text("\n".join(line for line in good_lines() if '"record":"chip"' not in line) + "\n")
    result = run(migrated_url, "ingest", str(path))
    assert result.exit_code == 2
    assert "which is neither in the input nor the store" in result.output
    assert sum(counts(migrated_url).values()) == 0


def test_ingest_twice_changes_nothing(migrated_url, tmp_path, sdc_env):
    path = tmp_path / "ledger.jsonl"
    path.write_text("\n".join(good_lines(50)) + "\n")
    first = run(migrated_url, "ingest", str(path))
    assert first.exit_code == 0, first.output
    stored = counts(migrated_url)
    assert stored["probe_result"] == 50
    second = run(migrated_url, "ingest", str(path), "-", input=path.read_text())  # and again on stdin
    assert second.exit_code == 0, second.output
    assert counts(migrated_url) == stored


def _all_rows(url) -> dict[str, list[tuple]]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return {
                kind: connection.execute(select(row.__table__).order_by(*row.__table__.primary_key.columns)).all()
                for kind, row in ROW_TYPES.items()
            }
    finally:
        engine.dispose()


def test_export_then_ingest_into_a_fresh_database_gives_identical_rows(migrated_url, tmp_path, sdc_env):
    source = tmp_path / "source.jsonl"
    source.write_text("\n".join(good_lines(30)) + "\n")
    assert run(migrated_url, "ingest", str(source)).exit_code == 0
    exported = tmp_path / "exported.jsonl"
    result = run(migrated_url, "export", "-o", str(exported))
    assert result.exit_code == 0, result.output

    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(fresh)
    result = run(fresh, "ingest", str(exported))
    assert result.exit_code == 0, result.output
    assert _all_rows(fresh) == _all_rows(migrated_url)
    # ... and exporting the copy gives the same lines again.
    again = run(fresh, "export").output
    assert again == exported.read_text()


def test_export_filters_by_kind_and_time(migrated_url, tmp_path, sdc_env):
    source = tmp_path / "source.jsonl"
    source.write_text("\n".join(good_lines(10)) + "\n")
    assert run(migrated_url, "ingest", str(source)).exit_code == 0
    out = run(migrated_url, "export", "--kind", "probe_result", "--since", "2026-11-01T12:00:00.123456+00:00").output
    assert [json.loads(line)["record"] for line in out.splitlines()] == ["probe_result"] * 10
    late = run(migrated_url, "export", "--kind", "probe_result", "--since", "2026-11-01T12:00:00.124Z").output
    assert 0 < len(late.splitlines()) < 10
    bad = run(migrated_url, "export", "--since", "last tuesday")
    assert bad.exit_code == 2 and "is not an ISO 8601 time" in bad.output


def test_the_installed_command_reports_bad_lines_and_exits_2(tmp_path, sdc_env):
    """The real ``sdc`` executable, not the in-process runner: what cron and scripts see.

    Once, on SQLite: the backends are covered above; this is about the process boundary.
    """
    migrated_url = f"sqlite:///{tmp_path / 'sdc.db'}"
    upgrade(migrated_url)
    path = tmp_path / "bad.jsonl"
    path.write_text(with_bad(_obj(status="corrupt"), at=2))
    env = {**os.environ, "SDC_DATABASE_URL": migrated_url}
    proc = subprocess.run([sys.executable, "-m", "sdc", "ingest", str(path)], capture_output=True, text=True, env=env)
    assert proc.returncode == 2, proc.stderr
    assert f"{path}:2: field 'status' must be one of" in proc.stderr
    assert sum(counts(migrated_url).values()) == 0
