"""One analysis at a time per store: a second waits for the first (and then adds nothing), or
gives up with a clear error having stored nothing — on SQLite and PostgreSQL, and between
real `sdc analyze` processes."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from sdc.quarantine.pipeline import analyze_store
from sdc.store.lock import AnalysisBusy, analysis_lock
from sdc.store.reader import quarantine_events

from tests.quarantine.test_pipeline import load_fleet, settings


def test_a_second_analysis_gives_up_after_its_wait_and_stores_nothing(store):
    load_fleet(store, faults={"persistent": 1})
    config = settings(store, breaker_share=0.1)
    with analysis_lock(store.engine()):
        started = time.monotonic()
        with pytest.raises(AnalysisBusy, match="another sdc analyze is running"):
            analyze_store(store, config, lock_timeout=0.5)
        assert time.monotonic() - started >= 0.5
        assert quarantine_events(store.engine()) == []
        # A dry run stores nothing, so it never waits.
        assert analyze_store(store, config, dry_run=True).transitions
    assert len(analyze_store(store, config, lock_timeout=0.5).transitions) == 1


def test_a_waiting_analysis_runs_after_the_first_and_adds_no_duplicate(store):
    load_fleet(store, faults={"persistent": 1})
    config = settings(store, breaker_share=0.1)
    results = {}
    # Hold the lock here while a second analysis, in a thread, waits for it.
    with analysis_lock(store.engine()):
        first = analyze_store(store, config, dry_run=True)
        waiter = threading.Thread(target=lambda: results.setdefault("second", analyze_store(store, config, lock_timeout=30)))
        waiter.start()
        time.sleep(0.6)
        assert waiter.is_alive(), "the second analysis must wait while the lock is held"
        # What the first analysis would store, stored while holding the lock.
        store.deliver([*first.verdicts, *first.transitions])
    waiter.join(30)
    assert not waiter.is_alive()
    assert results["second"].transitions == []  # it saw the first one's quarantine
    assert len(quarantine_events(store.engine())) == 1


def test_two_analyze_processes_at_once_quarantine_a_chip_once(sdc_env):
    env = {**os.environ, "XDG_DATA_HOME": str(sdc_env / "data"), "XDG_CONFIG_HOME": str(sdc_env / "config")}
    env.pop("SDC_DATABASE_URL", None)
    env.pop("SDC_CONFIG", None)
    sdc = [sys.executable, "-m", "sdc"]

    def run(*args):
        return subprocess.run([*sdc, *args], env=env, capture_output=True, text=True, timeout=300)

    fleet, truth = str(sdc_env / "fleet.jsonl"), str(sdc_env / "truth.json")
    assert run("db", "upgrade").returncode == 0
    assert run("simulate", "--chips", "48", "--sweeps", "4", "--faults", "persistent=1", "--onset", "1", "-o", fleet, "--truth", truth).returncode == 0
    assert run("ingest", fleet).returncode == 0
    (bad_chip,) = json.load(open(truth))
    racers = [subprocess.Popen([*sdc, "analyze"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in racers]
    moved = [out.count(f"moved {bad_chip}: healthy -> quarantined") for out in outputs]
    assert sorted(moved) == [0, 1], outputs
    listed = json.loads(run("quarantine", "list", "--json").stdout)
    assert [(row["chip_id"], row["state"]) for row in listed] == [(bad_chip, "quarantined")]
    events = [json.loads(line) for line in run("export", "--kind", "quarantine_event").stdout.splitlines()]
    assert [(e["chip_id"], e["to_state"]) for e in events] == [(bad_chip, "quarantined")]
