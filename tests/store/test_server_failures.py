"""A PostgreSQL server that stops, restarts or freezes under a running sweep, ingest or check.

Each test runs its own server (``tests.store.pgcluster``: initdb into a temporary directory,
a free port, stopped or frozen by PID), never the machine's. Threads guard against a hang:
a test fails instead of blocking forever, and no test asserts how fast anything was.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from tests.store import samples
from tests.store.pgcluster import private_pg  # noqa: F401 - the fixture

from sdc.store import Store
from sdc.store.engine import make_engine
from sdc.store.migrate import upgrade

HANG_GUARD_S = 240


def _in_thread(fn, guard_s: float = HANG_GUARD_S):
    """Run ``fn`` in a thread; fail the test if it has not returned after ``guard_s``."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(guard_s)
    assert not thread.is_alive(), f"still blocked after {guard_s} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _sweep_status(url: str, sweep_id: str) -> tuple[str, int]:
    engine = make_engine(url)
    with engine.connect() as connection:
        status = connection.execute(text("SELECT status FROM sweeps WHERE sweep_id = :s"), {"s": sweep_id}).scalar_one()
        results = connection.execute(text("SELECT count(*) FROM probe_results WHERE sweep_id = :s"), {"s": sweep_id}).scalar_one()
    engine.dispose()
    return status, results


def _sweep(store, tmp_path, on_case=None):
    from probes.registry import all_probes
    from sdc.sweep.node_sweep import NodeSweepOptions, node_sweep, select_probes

    options = NodeSweepOptions(devices="cpu:0", repeats=1, data_dir=tmp_path, case_timeout_s=120)
    probes = select_probes(all_probes(), ["gemm"])
    return node_sweep(store, options, probes, progress=on_case)


@pytest.fixture
def short_timeouts(monkeypatch):
    monkeypatch.setenv("SDC_CONNECT_TIMEOUT", "2")
    monkeypatch.setenv("SDC_STATEMENT_TIMEOUT", "3")


def test_a_sweep_whose_server_stops_spools_and_stays_complete_after_restart(private_pg, tmp_path, short_timeouts):  # noqa: F811
    upgrade(private_pg.url)
    outbox = tmp_path / "outbox"
    events = []

    def stop_at_first_case(*_args):
        if not events:
            events.append("stopped")
            private_pg.stop()  # the chips and the running sweep are stored; the rest is not

    first = _in_thread(lambda: _sweep(Store(private_pg.url, outbox), tmp_path, stop_at_first_case))
    assert events == ["stopped"]
    assert first.spooled > 0 and first.summary.sweep.status == "complete"
    n_results = sum(sum(c.statuses.values()) for c in first.summary.chips)

    private_pg.start()
    # The next sweep runs before anyone flushes: it delivers the outbox first, and only then
    # marks this host's 'running' sweeps whose process is gone.
    second = _in_thread(lambda: _sweep(Store(private_pg.url, outbox), tmp_path))
    assert second.replayed == first.spooled
    assert first.summary.sweep.sweep_id not in second.abandoned
    assert _sweep_status(private_pg.url, first.summary.sweep.sweep_id) == ("complete", n_results)


def test_ingest_whose_server_stops_during_the_write_spools_piped_input(private_pg, tmp_path, sdc_env, short_timeouts):  # noqa: F811
    """``sdc ingest -``: the input was consumed, so the outbox gets it from ingest's own copy."""
    upgrade(private_pg.url)
    records = samples.one_of_each(30_000)
    payload = samples.jsonl(records)
    env = {**os.environ, "SDC_DATABASE_URL": private_pg.url, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdc", "ingest", "-"], env=env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    half = len(payload) // 2
    proc.stdin.write(payload[:half])
    proc.stdin.flush()
    private_pg.stop()  # the database dies while ingest is reading and writing
    stdout, stderr = proc.communicate(payload[half:], timeout=HANG_GUARD_S)
    assert proc.returncode in (0, 2), stderr
    assert "Traceback" not in stderr
    assert f"{len(records)} records kept in the outbox" in stderr, stderr

    private_pg.start()
    store = Store(private_pg.url, sdc_env / "data" / "sdc" / "outbox")
    assert store.flush() == len(records)
    store.dispose()
    engine = make_engine(private_pg.url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM probe_results")).scalar_one() == 30_000
    engine.dispose()


def test_a_frozen_server_costs_a_bounded_wait_not_a_hang(private_pg, tmp_path, short_timeouts):  # noqa: F811
    upgrade(private_pg.url)
    engine = make_engine(private_pg.url)
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        private_pg.freeze()  # SIGSTOP: the kernel still acknowledges TCP, nothing answers
        try:
            with pytest.raises(OperationalError):
                _in_thread(lambda: connection.execute(text("SELECT count(*) FROM chips")).scalar_one())
        finally:
            connection.invalidate()
    # A new connection to the frozen server gives up too.
    with pytest.raises(OperationalError):
        _in_thread(lambda: engine.connect().close())
    engine.dispose()
    private_pg.thaw()


def test_a_sweep_whose_server_freezes_spools_and_finishes(private_pg, tmp_path, short_timeouts):  # noqa: F811
    upgrade(private_pg.url)
    outbox = tmp_path / "outbox"
    events = []

    def freeze_at_first_case(*_args):
        if not events:
            events.append("frozen")
            private_pg.freeze()

    result = _in_thread(lambda: _sweep(Store(private_pg.url, outbox), tmp_path, freeze_at_first_case))
    assert events == ["frozen"]
    assert result.summary.sweep.status == "complete" and result.spooled > 0
    private_pg.thaw()
    store = Store(private_pg.url, outbox)
    assert store.flush() == result.spooled
    store.dispose()
    assert _sweep_status(private_pg.url, result.summary.sweep.sweep_id)[0] == "complete"


def test_check_answers_unknown_when_the_server_is_frozen(private_pg, tmp_path, sdc_env):  # noqa: F811
    upgrade(private_pg.url)
    private_pg.freeze()
    env = {**os.environ, "SDC_DATABASE_URL": private_pg.url}
    env.pop("SDC_CONNECT_TIMEOUT", None)
    try:
        # The guard is generous; node-problem-detector's own 5 s is what check is built for.
        proc = subprocess.run([sys.executable, "-m", "sdc", "check"], env=env, capture_output=True, text=True, timeout=60)
    finally:
        private_pg.thaw()
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout.startswith("UNKNOWN"), proc.stdout
