"""One analysis at a time per evidence store.

Two ``sdc analyze`` runs over the same evidence (cron on two nodes, the agent beside an
operator at a terminal) would each decide the same quarantine transitions and store both: the
chip's history doubles, and the circuit breaker counts one quarantine as two. With the lock
the second run waits for the first, then sees its transitions and adds none; or it gives up
after ``timeout`` seconds with ``AnalysisBusy``, having stored nothing.

PostgreSQL: a session advisory lock, keyed by the schema, on a connection of its own (the
server drops it if the process dies). SQLite: ``flock`` on a file beside the database (the
kernel drops it if the process dies). In-memory SQLite and other backends share nothing with
another process: no lock.
"""

from __future__ import annotations

import fcntl
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, text

from sdc.store.engine import StoreError

# The first key of PostgreSQL's two-key advisory locks: sdc's analysis (the second is the schema).
ADVISORY_CLASS = 0x5DC0
POLL_SECONDS = 0.2


class AnalysisBusy(StoreError):
    """Another analysis of this store held the lock for longer than we were willing to wait."""


def _busy(where: str, timeout: float) -> AnalysisBusy:
    return AnalysisBusy(
        f"another sdc analyze is running against {where} and did not finish within {timeout:g} s; "
        "nothing was stored: run again when it is done (or give --wait more seconds)"
    )


@contextmanager
def analysis_lock(engine: Engine, timeout: float = 600.0) -> Iterator[None]:
    backend = engine.url.get_backend_name()
    if backend == "postgresql":
        with _postgres_lock(engine, timeout):
            yield
    elif backend == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        with _file_lock(Path(engine.url.database).expanduser(), timeout):
            yield
    else:
        yield


def _wait(try_once, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not try_once():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


@contextmanager
def _postgres_lock(engine: Engine, timeout: float) -> Iterator[None]:
    # Autocommit: the lock belongs to the session, and no transaction stays open meanwhile.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        key = {"cls": ADVISORY_CLASS}
        key["obj"] = connection.execute(text("SELECT hashtext(current_schema())")).scalar_one()
        take = text("SELECT pg_try_advisory_lock(:cls, :obj)")
        if not _wait(lambda: connection.execute(take, key).scalar_one(), timeout):
            raise _busy(f"this PostgreSQL schema ({engine.url.database})", timeout)
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:cls, :obj)"), key)


@contextmanager
def _file_lock(database: Path, timeout: float) -> Iterator[None]:
    path = database.with_name(database.name + ".analyze.lock")
    with open(path, "a+") as handle:

        def take() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        if not _wait(take, timeout):
            raise _busy(str(database), timeout)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
