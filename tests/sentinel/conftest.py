"""Runs the sentinel worker as a real multi-process gloo job and collects what each rank saw."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from sdc.records import JobEvent
from sdc.store import Store
from sdc.store.migrate import upgrade
from sdc.store.reader import iter_records

WORKER = Path(__file__).with_name("worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SCENARIOS = ("healthy", "replicas", "local", "error", "two_ranks", "replay_failure", "log_once", "hsdp", "fsdp_gemm", "hsdp_gemm", "defaults")


@dataclass
class JobRun:
    ranks: list[dict]
    events: list[JobEvent]

    def verdict(self, rank: int, step: int) -> dict:
        return self.ranks[rank]["verdicts"][step]

    def not_ok_steps(self, rank: int) -> dict[int, dict]:
        return {v["step"]: v for v in self.ranks[rank]["verdicts"] if not v["ok"]}


def run_jobs(tmp_path: Path, scenarios=SCENARIOS, world: int = 4, steps: int = 50) -> dict[str, JobRun]:
    """One 4-process gloo launch runs every scenario in turn (torch's import dominates start-up)."""
    url = f"sqlite:///{tmp_path / 'sdc.db'}"
    upgrade(url)
    outbox = tmp_path / "outbox"
    out = tmp_path / "out"
    out.mkdir()
    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   SDC_HOSTNAME="testhost", OMP_NUM_THREADS="1")
        cmd = [sys.executable, str(WORKER), "--scenarios", ",".join(scenarios), "--steps", str(steps), "--out", str(out),
               "--database-url", url, "--outbox", str(outbox)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    for proc in procs:
        try:
            output, _ = proc.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("sentinel test job timed out")
        logs.append(output)
    for rank, (proc, output) in enumerate(zip(procs, logs)):
        assert proc.returncode == 0, f"rank {rank} exited {proc.returncode}:\n{output[-4000:]}"
    store = Store(url, outbox)
    store.flush()  # ranks that found SQLite locked spooled to the outbox
    events = [e for e in iter_records(store.engine(), kinds=["job_event"]) if isinstance(e, JobEvent)]
    store.dispose()
    runs = {}
    for scenario in scenarios:
        files = sorted(out.glob(f"{scenario}-rank*.json"))
        ranks = sorted((json.loads(f.read_text()) for f in files), key=lambda r: r["rank"])
        runs[scenario] = JobRun(ranks, [e for e in events if e.job_id == f"test-{scenario}"])
    return runs


@pytest.fixture(scope="session")
def jobs(tmp_path_factory):
    """Every scenario's outcome, from one launch shared by the tests of this directory."""
    return run_jobs(tmp_path_factory.mktemp("sentinel-jobs"))
