"""Engines for the evidence store: URL normalisation, SQLite pragmas, PostgreSQL time limits.

A PostgreSQL server that is down, unreachable or frozen (SIGSTOP, a hung host) must cost a
bounded time, never a hang: connections are opened fresh for each use (a pooled one may be
dead), opening one gives up after ``SDC_CONNECT_TIMEOUT`` seconds, the server cancels a
statement after ``SDC_STATEMENT_TIMEOUT`` seconds, TCP keep-alives and ``tcp_user_timeout``
notice a vanished host, and a client-side deadline (``deadline``) cuts a statement the
frozen server will never answer, which no server-side setting can do.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

SQLITE_BUSY_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_S = 60


class StoreError(RuntimeError):
    """A store problem a user can act on; the message says what to do."""


def normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` and send it through psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, **kwargs) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            directory = Path(parsed.database).expanduser().parent
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create {directory} for the SQLite database: {exc.strerror or exc}; "
                    "choose another place with --db or SDC_DATABASE_URL"
                ) from None
        connect_args = kwargs.pop("connect_args", {})
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        statement_s = _seconds("SDC_STATEMENT_TIMEOUT", STATEMENT_TIMEOUT_S)
        connect_args = {**postgres_timeouts(url, statement_s), **kwargs.pop("connect_args", {})}
        kwargs.setdefault("poolclass", NullPool)
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        _watch_statements(engine, statement_s)
        return engine
    return create_engine(url, **kwargs)


def _seconds(variable: str, default: float) -> float:
    try:
        value = float(os.environ.get(variable, default))
    except ValueError:
        raise StoreError(f"{variable}={os.environ[variable]!r} is not a number of seconds") from None
    return value if value > 0 else default


def postgres_timeouts(url: str, statement_s: float) -> dict[str, Any]:
    """libpq connection parameters that bound every wait on the server (see module docstring)."""
    options = make_url(url).query.get("options", "")
    if isinstance(options, tuple):
        options = " ".join(options)
    return {
        # libpq counts this per address tried and takes no less than 2 s
        "connect_timeout": max(2, round(_seconds("SDC_CONNECT_TIMEOUT", CONNECT_TIMEOUT_S))),
        "options": f"{options} -c statement_timeout={int(statement_s * 1000)}".strip(),
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": int(statement_s * 1000),
    }


class _Deadlines:
    """Cuts the socket of a statement still running past its deadline (the server is frozen).

    A stopped server's kernel still acknowledges TCP, so keep-alives never fire and the
    server's own ``statement_timeout`` never runs: only the client can give up. Shutting the
    socket down makes the driver fail the statement at once with a connection error, which
    the store treats as "database unavailable" (the records go to the outbox).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[float, Any]] = {}
        self._thread: threading.Thread | None = None

    def arm(self, dbapi_connection: Any, seconds: float) -> None:
        with self._lock:
            self._armed[id(dbapi_connection)] = (time.monotonic() + seconds, dbapi_connection)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="sdc-statement-deadline", daemon=True)
                self._thread.start()

    def disarm(self, dbapi_connection: Any) -> None:
        with self._lock:
            self._armed.pop(id(dbapi_connection), None)

    def _watch(self) -> None:
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            with self._lock:
                late = [(key, conn) for key, (deadline, conn) in self._armed.items() if deadline < now]
                for key, _ in late:
                    del self._armed[key]
            for _, conn in late:
                _sever(conn)


def _sever(dbapi_connection: Any) -> None:
    try:
        import psycopg

        if dbapi_connection.info.transaction_status != psycopg.pq.TransactionStatus.ACTIVE:
            return  # idle between statements: nothing is waiting on the server
        fd = dbapi_connection.fileno()
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()
    except Exception:  # already closed, or not a psycopg connection: nothing to cut
        pass


DEADLINES = _Deadlines()


@contextmanager
def deadline(dbapi_connection: Any, seconds: float | None) -> Iterator[None]:
    """Bound one driver call made outside SQLAlchemy's execute (bulk inserts, COPY)."""
    if seconds is None:
        yield
        return
    DEADLINES.arm(dbapi_connection, seconds)
    try:
        yield
    finally:
        DEADLINES.disarm(dbapi_connection)


def statement_seconds(engine: Engine) -> float | None:
    """The client-side deadline of one statement on this engine (None: no deadline)."""
    return getattr(engine.dialect, "sdc_statement_s", None)


def _watch_statements(engine: Engine, seconds: float) -> None:
    engine.dialect.sdc_statement_s = seconds  # read back by statement_seconds()
    limit = seconds + 2.0  # the server's own statement_timeout answers first when it can

    def arm(conn, *_args) -> None:
        DEADLINES.arm(conn.connection.dbapi_connection, limit)

    def disarm(conn, *_args) -> None:
        DEADLINES.disarm(conn.connection.dbapi_connection)

    event.listen(engine, "before_cursor_execute", arm)
    event.listen(engine, "after_cursor_execute", disarm)
    event.listen(engine, "commit", arm)  # a commit waits on the server too
    event.listen(engine, "handle_error", lambda context: DEADLINES.disarm(context.connection.connection.dbapi_connection) if context.connection is not None else None)
    event.listen(engine, "checkin", lambda dbapi_connection, _record: DEADLINES.disarm(dbapi_connection))


def sqlite_path(url: str | None) -> str | None:
    """The file of a SQLite URL (None for other backends or in-memory databases)."""
    if not url:
        return None
    try:
        parsed = make_url(url)
    except Exception:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return str(Path(parsed.database).expanduser())


def describe_database_error(exc: BaseException, url: str | None) -> str | None:
    """One line for a database failure: what is wrong and what to do; None if it is not one."""
    import sqlite3

    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    if isinstance(exc, StoreError):
        return str(exc)
    orig = getattr(exc, "orig", None) or exc
    reason = " ".join(str(orig).split())[:300] or type(orig).__name__
    if isinstance(orig, sqlite3.DatabaseError):
        path = sqlite_path(url) or "(the SQLite database)"
        if isinstance(orig, sqlite3.OperationalError):
            if "locked" in reason or "busy" in reason:
                return f"the SQLite database {path} stayed locked by another sdc process ({reason}); nothing was changed: run again"
            return f"cannot use the SQLite database {path} ({reason}): check that the file and its directory exist and are writable"
        return (
            f"the SQLite database {path} is damaged ({reason}); nothing was changed. Restore it from a backup, "
            f"or salvage what it holds with 'sqlite3 {path} .recover | sqlite3 {path}.recovered' and point --db at the copy"
        )
    from sdc.config import safe_url

    where = safe_url(url) if url else "the database"
    try:
        import psycopg

        driver_operational = isinstance(orig, psycopg.OperationalError)
    except ImportError:  # pragma: no cover
        driver_operational = False
    if driver_operational or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return f"cannot reach the database {where}: {reason}"
    if isinstance(exc, SQLAlchemyError):
        return f"database error on {where}: {reason}"
    return None


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets a reader (a report) run while a sweep writes; the busy timeout makes
    # concurrent writers queue instead of failing; SQLite leaves foreign keys off by default.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # 64 MiB of page cache (the default is 2 MiB): bulk ingest updates five indexes and
    # otherwise spends its time re-reading index pages.
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.close()
