"""A sweep killed with SIGKILL is marked incomplete later and never counts as evidence."""

import os
import signal
import subprocess
import sys
import time

from sqlalchemy import select

from sdc.store import Store
from sdc.store.models import SweepRow
from sdc.store.reader import probe_result_columns
from sdc.store.sweeps import mark_abandoned_sweeps


def _sweep_rows(store):
    table = SweepRow.__table__
    with store.engine().connect() as connection:
        return connection.execute(select(table.c.sweep_id, table.c.status, table.c.host)).all()


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
            columns = probe_result_columns(store.engine(), complete_only=False)
            if len(columns["result_id"]):
                break
            assert process.poll() is None, process.stdout.read().decode()
            time.sleep(0.2)
        assert len(columns["result_id"]) == 1, "cpu:0 finished before the kill"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        (row,) = _sweep_rows(store)
        assert row.status == "running"
        assert len(probe_result_columns(store.engine())["result_id"]) == 0, "a running sweep is not evidence"
        assert mark_abandoned_sweeps(store.engine(), "killed-host") == [row.sweep_id]
        (row,) = _sweep_rows(store)
        assert row.status == "incomplete"
        assert len(probe_result_columns(store.engine())["result_id"]) == 0
    finally:
        if process.poll() is None:
            process.kill()
        store.dispose()
