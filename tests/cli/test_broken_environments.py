"""Every command against every broken environment: one line, exit 2 (or 0 when nothing was
lost), never a traceback and never exit 1 — exit 1 means "fault found" and drains the node.

The environments are what a node really meets: a SQLite file of random bytes, one with
scribbled pages, one cut short, a PostgreSQL server that is gone, and that same server gone
while the outbox path is a regular file (so nothing can be kept).
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.store import samples

from sdc.cli import cli
from sdc.store.engine import make_engine
from sdc.store.migrate import upgrade
from sdc.store.writer import write_records

COMMANDS = [
    ["db", "current"],
    ["db", "upgrade"],
    ["ingest", "{ledger}"],
    ["sweep", "--devices", "cpu:0", "--probes", "gemm", "--repeats", "1"],
    ["report"],
    ["status"],
    ["analyze"],
    ["quarantine", "list"],
    ["export"],
    ["export", "prometheus"],
    ["export", "slurm"],
    ["flush"],
    ["check"],
]
SQLITE_BROKEN = ["random-bytes", "scribbled-pages", "truncated"]
ENVIRONMENTS = [*SQLITE_BROKEN, "dead-postgresql", "dead-postgresql-outbox-is-a-file"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _filled_database(path: Path) -> None:
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = make_engine(url)
    chips, sweep = samples.chips(4), samples.sweep()
    write_records(engine, [*chips, sweep, *samples.results(sweep.sweep_id, chips, 3000)])
    engine.dispose()  # the last connection checkpoints the WAL into the file
    for extra in ("-wal", "-shm"):
        Path(f"{path}{extra}").unlink(missing_ok=True)


def _make_environment(name: str, tmp: Path, monkeypatch) -> str:
    """The database URL of the broken environment ``name`` (and its outbox set up)."""
    rng = random.Random(name)
    database = tmp / "sdc.db"
    if name == "random-bytes":
        database.write_bytes(rng.randbytes(1 << 16))
    elif name == "scribbled-pages":
        _filled_database(database)
        data = bytearray(database.read_bytes())
        for start in range(4096, len(data), 8192):  # every other page after the first
            data[start : start + 4096] = rng.randbytes(4096)
        database.write_bytes(bytes(data))
    elif name == "truncated":
        _filled_database(database)
        os.truncate(database, database.stat().st_size * 2 // 5)
    else:
        if name.endswith("outbox-is-a-file"):
            blocker = tmp / "outbox-file"
            blocker.write_text("not a directory\n")
            monkeypatch.setenv("SDC_OUTBOX_DIR", str(blocker))
        return f"postgresql://sdc@127.0.0.1:{_closed_port()}/sdc"
    return f"sqlite:///{database}"


@pytest.fixture(scope="module")
def ledger(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ledger") / "ledger.jsonl"
    path.write_text("".join(r.to_json() + "\n" for r in samples.one_of_each(5)))
    return path


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_command_fails_cleanly_in_a_broken_environment(environment, ledger, tmp_path, sdc_env, monkeypatch):
    monkeypatch.setenv("SDC_CONNECT_TIMEOUT", "2")
    url = _make_environment(environment, tmp_path, monkeypatch)
    database = str(tmp_path / "sdc.db")
    failures = []
    for command in COMMANDS:
        args = [a.format(ledger=ledger, tmp=tmp_path) for a in command]
        result = CliRunner().invoke(cli, ["--db", url, *args])
        output = result.output
        where = f"{environment}: sdc {' '.join(command)} -> exit {result.exit_code}: {output[-400:]!r}"
        if result.exit_code not in (0, 2) or "Traceback" in output or result.exception and not isinstance(result.exception, SystemExit):
            failures.append(where)
            continue
        if result.exit_code == 2 and command[0] != "check":
            message = [line for line in output.splitlines() if line.startswith("sdc: ")]
            if not message:
                failures.append(f"{where} (no 'sdc: ...' line)")
            elif "internal error" in output:
                failures.append(f"{where} (an unexpected error, not a described one)")
        if environment == "random-bytes" and command[0] not in ("flush", "check", "ingest", "sweep"):
            # Every command that reads the database says which file is damaged, and what to do.
            if result.exit_code != 2 or database not in output or ".recover" not in output:
                failures.append(f"{where} (does not name the damaged file and the way out)")
        if environment.endswith("outbox-is-a-file") and command[0] in ("ingest", "sweep"):
            # Nothing could be stored or kept: that is said, and it is not "healthy".
            if result.exit_code != 2 or "NOT kept" not in output and "nothing was kept" not in output:
                failures.append(f"{where} (does not say that nothing could be kept)")
    assert failures == []


def test_debug_prints_the_traceback_of_an_unexpected_error(tmp_path, sdc_env):
    database = tmp_path / "sdc.db"
    database.write_bytes(random.Random(1).randbytes(1 << 14))
    quiet = CliRunner().invoke(cli, ["--db", f"sqlite:///{database}", "status"])
    loud = CliRunner().invoke(cli, ["--debug", "--db", f"sqlite:///{database}", "status"])
    assert quiet.exit_code == loud.exit_code == 2
    assert "Traceback" not in quiet.output
    assert "Traceback" in loud.output and str(database) in loud.output.splitlines()[-1]
