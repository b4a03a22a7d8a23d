"""Real programs for the hand-off tests: a single-node Slurm (munged, slurmctld, slurmd on
loopback, a generated slurm.conf, no systemd or cgroups) and node_exporter, each started on
free loopback ports in a temporary directory and stopped by PID.

A missing program skips the test with the reason, unless ``SDC_REQUIRE_REAL_PROGRAMS=1``
(set by ``.ci/run``), where a missing program fails it: CI must run every hand-off test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

NODE = "sdcnode0"


def require(*programs: str) -> dict[str, str]:
    """Paths of ``programs`` (looked up in PATH and the sbin directories), or skip/fail."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/local/sbin"])
    found = {p: shutil.which(p, path=search) for p in programs}
    missing = sorted(p for p, path in found.items() if path is None)
    if missing:
        why = f"needs {', '.join(missing)} (apt-get install slurm-wlm munge prometheus-node-exporter chromium)"
        if os.environ.get("SDC_REQUIRE_REAL_PROGRAMS") == "1":
            pytest.fail(f"SDC_REQUIRE_REAL_PROGRAMS=1 but this test {why}")
        pytest.skip(why)
    return found  # type: ignore[return-value]


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports.

    The sockets are held open together while the ports are chosen: binding one, closing it and
    binding the next can hand back the same port twice (CI once gave slurmctld and slurmd the
    same port, and slurmctld then talked to itself)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def stop(process: subprocess.Popen) -> None:
    """Stop one daemon we started, by its PID: SIGTERM, then SIGKILL."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


def wait_for(condition, what: str, timeout: float = 60.0, logs: tuple[Path, ...] = ()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    tails = "\n".join(f"--- {p}:\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.exists())
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s\n{tails}")


class Slurm:
    """A running single-node cluster; ``env`` points sinfo/scontrol at it."""

    def __init__(self, root: Path, health_check: Path | None = None, health_check_interval: int = 0):
        tools = require("munged", "slurmctld", "slurmd", "sinfo", "scontrol")
        self.root = root
        self.processes: list[subprocess.Popen] = []
        for d in ("state", "spool", "munge"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "munge").chmod(0o700)
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.socket = root / "munge" / "munge.socket"
        self.conf = root / "slurm.conf"
        self.logs = (root / "munged.log", root / "slurmctld.log", root / "slurmd.log")
        host = socket.gethostname().split(".")[0]
        controller_port, node_port = free_ports(2)
        lines = [
            "ClusterName=sdctest", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmctldPort={controller_port}",
            f"SlurmdPort={node_port}", "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={self.socket}",
            "SlurmUser=root", "SlurmdUser=root", f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}", f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'slurmctld.log'}", f"SlurmdLogFile={root / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "SwitchType=switch/none", "MpiDefault=none",
            "SchedulerType=sched/builtin", "SelectType=select/linear", "ReturnToService=2", "SlurmdTimeout=300",
            f"NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={host} CPUs=1 State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES State=UP",
        ]
        if health_check is not None:
            lines += [f"HealthCheckProgram={health_check}", f"HealthCheckInterval={health_check_interval}", "HealthCheckNodeState=ANY"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        munge_dir = root / "munge"
        self._start([tools["munged"], "-F", "--force", f"--socket={self.socket}", f"--key-file={key}",
                     f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={self.logs[0]}", f"--seed-file={munge_dir / 'seed'}"])
        wait_for(self.socket.exists, "munged's socket", logs=self.logs)
        self._start([tools["slurmctld"], "-D", "-f", str(self.conf)])
        wait_for(lambda: self.sinfo_ok(), "slurmctld answering", logs=self.logs)
        self._start([tools["slurmd"], "-D", "-f", str(self.conf), "-N", NODE])
        wait_for(lambda: self.state() not in ("", "unknown", "down", "down*", "unknown*"), "the node registering", logs=self.logs)

    def _start(self, argv):
        log = open(self.root / (Path(argv[0]).name + ".out"), "wb")
        self.processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True))

    def sinfo_ok(self) -> bool:
        return subprocess.run(["sinfo", "--noheader"], env=self.env, capture_output=True, timeout=30).returncode == 0

    def node(self) -> tuple[str, str]:
        """(state, reason) of the node as sinfo shows them."""
        out = subprocess.run(["sinfo", "--noheader", "--Node", f"--nodes={NODE}", "--format=%T|%E"], env=self.env,
                             capture_output=True, text=True, timeout=30).stdout.strip()
        state, _, reason = out.partition("|")
        return state, "" if reason == "none" else reason

    def state(self) -> str:
        return self.node()[0]

    def scontrol(self, *args: str) -> None:
        subprocess.run(["scontrol", *args], env=self.env, check=True, capture_output=True, timeout=30)

    def close(self) -> None:
        for process in reversed(self.processes):
            stop(process)
