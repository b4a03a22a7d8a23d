"""The scheduled agent: coalescing after downtime, one instance at a time, busy-chip deferral,
and a clean stop on a real SIGTERM sent to a real agent process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_MAX_INSTANCES
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select

from sdc.agent.agent import Agent
from sdc.agent.config import agent_config
from sdc.agent.state import save_state
from sdc.config import ConfigError, load_settings
from sdc.node.busy import (
    BusyPolicy,
    NvmlUnavailable,
    busy_reason,
    load_reason,
    nvml_reason,
)
from sdc.store.models import ProbeResultRow, SweepRow

UTC = timezone.utc


def settings_for(url, tmp_path, agent_table=None):
    config = tmp_path / "config.toml"
    lines = [f'database_url = "{url}"', f'data_dir = "{tmp_path / "data"}"', "[agent]"]
    for key, value in (agent_table or {}).items():
        lines.append(f"{key} = {json.dumps(value)}")
    config.write_text("\n".join(lines) + "\n")
    return load_settings(config_path=config, environ={})


def wait_until(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_config_merges_table_and_flags_and_names_bad_schedules(tmp_path):
    settings = settings_for("sqlite://", tmp_path, {"sweep": "0 3 * * 0", "sweep_jitter": 300, "suite": "standard"})
    config = agent_config(settings, {"analyze": "15 * * * *", "suite": "quick"})
    assert [(j.name, j.schedule, j.jitter) for j in config.jobs] == [("sweep", "0 3 * * 0", 300), ("analyze", "15 * * * *", 0)]
    assert config.suite == "quick"  # the flag wins
    assert config.state_file == tmp_path / "data" / "agent-state.json"
    with pytest.raises(ConfigError, match="sweep: crontab '0 3 \\* \\* 9': day of week value 9"):
        agent_config(settings, {"sweep": "0 3 * * 9"})
    with pytest.raises(ConfigError, match="no job scheduled"):
        agent_config(settings_for("sqlite://", tmp_path), {})


def _agent(url, tmp_path, schedule, grace, counter, state=None):
    settings = settings_for(url, tmp_path)
    config = agent_config(settings, {"sweep": schedule, "misfire_grace_time": grace, "timezone": "UTC"})
    if state is not None:
        save_state(config.state_file, state)
    agent = Agent(settings, config, scheduler_factory=BackgroundScheduler)
    agent.functions["sweep"] = lambda: counter.append(time.monotonic())
    return agent


@pytest.mark.parametrize("grace, expected_runs", [(3 * 86400, 1), (60, 0)])
def test_missed_runs_after_downtime_coalesce_into_one_within_grace(tmp_path, grace, expected_runs):
    now = datetime.now(UTC)
    hour = (now.hour + 12) % 24  # a daily time safely in the past today or yesterday, not near now
    runs: list[float] = []
    # The agent was down for three days: three daily runs were missed.
    agent = _agent("sqlite://", tmp_path, f"0 {hour} * * *", grace, runs, {"sweep": now - timedelta(days=3)})
    agent.add_jobs()
    agent.scheduler.start()
    try:
        wait_until(lambda: len(runs) >= 1, timeout=1.0)
        time.sleep(0.3)  # time for any further (wrong) catch-up runs
    finally:
        agent.scheduler.shutdown(wait=True)
    assert len(runs) == expected_runs


def test_one_instance_at_a_time(tmp_path):
    release, started = threading.Event(), threading.Event()
    active, most, skipped = [0], [0], []
    lock = threading.Lock()

    def slow_sweep():
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        started.set()
        release.wait(10)
        with lock:
            active[0] -= 1

    settings = settings_for("sqlite://", tmp_path)
    config = agent_config(settings, {"sweep": "* * * * *", "run_now": True, "timezone": "UTC"})
    agent = Agent(settings, config, scheduler_factory=BackgroundScheduler)
    agent.functions["sweep"] = slow_sweep
    agent.scheduler.add_listener(lambda event: skipped.append(event), EVENT_JOB_MAX_INSTANCES)
    agent.add_jobs()
    agent.scheduler.start()
    try:
        assert started.wait(10)
        for _ in range(3):  # the schedule comes due again while the first run is still going
            agent.scheduler.get_job("sweep").modify(next_run_time=datetime.now(UTC))
            assert wait_until(lambda n=len(skipped): len(skipped) > n, timeout=5)
    finally:
        release.set()
        agent.scheduler.shutdown(wait=True)
    assert most[0] == 1
    assert len(skipped) == 3


def test_busy_chips_defer_the_sweep_and_the_deferral_is_stored(store, tmp_path):
    settings = settings_for(store.url, tmp_path)
    config = agent_config(settings, {"sweep": "0 3 * * 0", "devices": "cpu:0", "defer_retry": 900})
    agent = Agent(settings, config, scheduler_factory=BackgroundScheduler, busy=lambda: "chip 0 runs 1 other process(es) (pid 4242)")
    agent.sweep()
    with store.engine().connect() as conn:
        rows = conn.execute(select(SweepRow.status, SweepRow.message)).all()
    assert len(rows) == 1
    status, message = rows[0]
    assert status == "aborted"
    assert message.startswith("deferred: chip 0 runs 1 other process(es) (pid 4242); retry in 900 s")
    assert agent.scheduler.get_job("sweep-retry") is not None


def test_busy_decisions_nvml_and_load_fallback():
    policy = BusyPolicy(utilization_percent=10, load_per_core=0.9)
    assert nvml_reason({0: [100], 1: []}, {0: 0.0, 1: 0.0}, own_pid=100, policy=policy) is None
    assert "runs 1 other process" in nvml_reason({0: [100, 7]}, {0: 0.0}, own_pid=100, policy=policy)
    assert "95% utilised" in nvml_reason({0: []}, {0: 95.0}, own_pid=100, policy=policy)
    assert load_reason(1.0, 4, policy) is None
    assert "load average 7.60 on 8 cores" in load_reason(7.6, 8, policy)

    def no_nvml():
        raise NvmlUnavailable("libnvidia-ml.so.1 not found")

    assert "load average" in busy_reason(policy, nvml=no_nvml, loadavg=lambda: (16.0, 0, 0), cores=lambda: 2)
    assert busy_reason(policy, nvml=no_nvml, loadavg=lambda: (0.1, 0, 0), cores=lambda: 2) is None


def test_report_job_writes_the_page(faulty_store, tmp_path):
    settings = settings_for(faulty_store.url, tmp_path)
    target = tmp_path / "out" / "q.md"
    config = agent_config(settings, {"report": "0 * * * *", "report_path": str(target), "report_format": "markdown"})
    Agent(settings, config, scheduler_factory=BackgroundScheduler).report()
    page = target.read_text()
    assert page.startswith("# sdc quarantine report") and "GPU-node00-00" in page
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary left


def test_sigterm_lets_the_running_probe_finish_marks_the_sweep_and_exits_cleanly(migrated_url, tmp_path):
    if not migrated_url.startswith("sqlite"):
        pytest.skip("one backend is enough for the process test")
    log_path = tmp_path / "agent.log"
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "cfg"), SDC_HOSTNAME="agent-test")
    command = [
        sys.executable, "-m", "sdc", "--db", migrated_url, "agent", "--sweep", "0 3 * * 0", "--run-now", "--no-busy-check",
        "--devices", "cpu:0", "--suite", "quick", "--repeats", "200",
    ]
    with open(log_path, "w") as log:
        agent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=Path(__file__).parents[2])
    try:
        # Signal as soon as the first case starts: 200 repeats keep it running well past that.
        assert wait_until(lambda: "gemm/square" in log_path.read_text(), timeout=90), log_path.read_text()
        agent.send_signal(signal.SIGTERM)
        rc = agent.wait(timeout=120)
    finally:
        if agent.poll() is None:
            agent.kill()
    text = log_path.read_text()
    assert rc == 0, text
    assert "SIGTERM: finishing the running probe" in text and "agent stopped" in text
    from sdc.store import Store

    s = Store(migrated_url)
    with s.engine().connect() as conn:
        rows = conn.execute(select(SweepRow.status, SweepRow.message, SweepRow.finished_at)).all()
    s.dispose()
    assert len(rows) == 1
    status, message, finished = rows[0]
    assert status == "aborted" and finished is not None
    assert message.startswith("stopped by request: running cases finished") and "not run" in message
    # The case that was running when the signal came finished and its result was kept.
    s = Store(migrated_url)
    with s.engine().connect() as conn:
        results = conn.execute(select(ProbeResultRow.probe, ProbeResultRow.case, ProbeResultRow.status)).all()
    s.dispose()
    assert [(probe, case["name"], st) for probe, case, st in results] == [("gemm", "square", "ok")]
