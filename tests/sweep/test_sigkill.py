"""A sweep killed with SIGKILL is marked incomplete later and never counts as evidence."""

import os
import signal
import subprocess
import sys
import time

from sqlalchemy import select

from sdc.analysis.load import load_evidence
from sdc.store import Store
from sdc.store.models import SweepRow
from sdc.store.sweeps import mark_abandoned_sweeps
from sdc.store.writer import count_rows


def _sweep_rows(store):
    table = SweepRow.__table__
    with store.engine().connect() as connection:
        return connection.execute(select(table.c.sweep_id, table.c.status, table.c.host)).all()


def _descendants(pid):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parent = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pids):
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
        except OSError:
            pass
    return alive


def test_sigkilled_sweep_is_marked_incomplete(sdc_env, migrated_url):
    env = dict(os.environ, SDC_HOSTNAME="killed-host")
    # cpu:0's results are stored, then cpu:1 hangs: the process is killed mid-sweep.
    process = subprocess.Popen(
        [sys.executable, "-m", "sdc", "--db", migrated_url, "sweep", "--devices", "cpu:0,cpu:1", "--probes", "memory",
         "--inject", "cpu:1:hang"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    store = Store(migrated_url)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            stored = count_rows(store.engine())["probe_result"]
            if stored:
                break
            assert process.poll() is None, process.stdout.read().decode()
            time.sleep(0.2)
        assert stored == 1, "cpu:0 finished before the kill"
        helpers = _descendants(process.pid)  # the fork server and cpu:1's hung worker
        assert helpers, "the sweep runs its chips in worker processes"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        deadline = time.monotonic() + 20
        while _alive(helpers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(helpers), "a hung worker must not outlive its sweep"
        (row,) = _sweep_rows(store)
        assert row.status == "running"
        # What the analysis loads: a running sweep is not evidence, nor an incomplete one.
        assert load_evidence(store.engine()).n_results == 0, "a running sweep is not evidence"
        assert mark_abandoned_sweeps(store.engine(), "killed-host") == [row.sweep_id]
        (row,) = _sweep_rows(store)
        assert row.status == "incomplete"
        assert load_evidence(store.engine()).n_results == 0
    finally:
        if process.poll() is None:
            process.kill()
        store.dispose()
