"""Engines for the evidence store: URL normalisation, SQLite pragmas, schema-at-head guard."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_MS = 30_000


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
        connect_args = kwargs.pop("connect_args", {})
        connect_args.setdefault("connect_timeout", int(os.environ.get("SDC_CONNECT_TIMEOUT", "5")))
        return create_engine(url, connect_args=connect_args, pool_pre_ping=True, **kwargs)
    return create_engine(url, **kwargs)


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
