"""A private PostgreSQL server for tests that stop, restart or freeze it.

``initdb`` into a temporary directory, ``postgres`` on a free port, stopped by its PID: the
machine's own server is never touched. Skipped where no ``initdb`` is installed. Running as
root, the server runs as the ``postgres`` user (PostgreSQL refuses root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


class PrivateCluster:
    def __init__(self) -> None:
        initdb, self.postgres = _binary("initdb"), _binary("postgres")
        if not initdb or not self.postgres:
            pytest.skip("initdb/postgres not installed")
        self.user: dict = {}
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and no 'postgres' user to run a private server as")
            self.user = {"user": entry.pw_uid, "group": entry.pw_gid}
        self.root = Path(tempfile.mkdtemp(prefix="sdc-pg-"))
        self.data = self.root / "data"
        if self.user:
            os.chown(self.root, self.user["user"], self.user["group"])
        subprocess.run(
            [initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, **self.user,
        )  # fmt: skip
        self.port = _free_port()
        self.process: subprocess.Popen | None = None
        self.start()
        with psycopg.connect(self._admin_url, autocommit=True) as connection:
            connection.execute("CREATE DATABASE sdc")

    @property
    def _admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/sdc"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.postgres, "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "server.log", "ab"), **self.user,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                psycopg.connect(self._admin_url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"private PostgreSQL did not start: {(self.root / 'server.log').read_text()[-2000:]}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster), waiting until it is gone."""
        if self.process is None:
            return
        self.thaw()
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def _pids(self) -> list[int]:
        if self.process is None:
            return []
        pids = [self.process.pid]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                pids.append(int(stat.parent.name))
        return pids

    def freeze(self) -> None:
        """SIGSTOP the server and every backend: connections stay open, nothing answers."""
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_pg():
    cluster = PrivateCluster()
    try:
        yield cluster
    finally:
        cluster.destroy()
