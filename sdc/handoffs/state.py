"""Per-node chip states for the hand-offs: a few indexed queries, nothing heavy imported.

``sdc check`` runs every minute on every node, so ``read_statuses`` reads only the rows of
the hosts asked for, and for the default store (a SQLite file) through the standard
library's sqlite3: importing SQLAlchemy alone costs more than the query. Other databases go
through SQLAlchemy Core with the few columns named here as lightweight ``table()`` clauses
(never the ORM models, Alembic or numpy of ``sdc.store``). A chip's state is the
``to_state`` of its latest *applied* quarantine event; dry-run events (``details.dry_run``)
never change what a hand-off does.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple, Sequence

from sdc.quarantine.states import DRAIN_STATES, FAULT_STATES, STATE_RANK, current_states
from sdc.records import SEVERITY_RANK

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["DRAIN_STATES", "FAULT_STATES", "ChipStatus", "node_statuses", "read_statuses", "this_host"]


def this_host() -> str:
    """This node's name as sdc records it (``SDC_HOSTNAME`` overrides), without importing torch."""
    return os.environ.get("SDC_HOSTNAME") or socket.gethostname()


@dataclass(frozen=True)
class ChipStatus:
    chip_id: str
    host: str
    index: int
    state: str = "healthy"
    since: datetime | None = None
    verdict_kind: str | None = None
    severity: str | None = None
    score: float | None = None

    @property
    def rank(self) -> tuple[int, int]:
        return STATE_RANK.get(self.state, 0), SEVERITY_RANK.get(self.severity or "", -1)


class _EventRow(NamedTuple):
    chip_id: str
    to_state: str
    at: Any
    details: Any


def _assemble(chips: Sequence, events: Iterable, verdicts: Iterable, wanted: list[str] | None) -> dict[str, list[ChipStatus]]:
    """Chip rows (id, host, index), event rows (id, to_state, at, details) oldest first, and
    verdict rows (id, kind, severity, score) oldest first, into statuses by host."""
    states = {chip: (s.state, s.since) for chip, s in current_states(_EventRow(*row) for row in events).items()}
    latest: dict[str, tuple] = {}
    for chip_id, kind, severity, score in verdicts:
        latest[chip_id] = (kind, severity, score)
    out: dict[str, list[ChipStatus]] = {host: [] for host in (wanted or ())}
    for chip_id, host, index in chips:
        state, since = states.get(chip_id, ("healthy", None))
        kind, severity, score = latest.get(chip_id, (None, None, None))
        out.setdefault(host, []).append(ChipStatus(chip_id, host, index, state, _time(since), kind, severity, score))
    return out


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value))  # SQLite stores UTC as text without a zone
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def node_statuses(engine: Engine, hosts: Iterable[str] | None = None) -> dict[str, list[ChipStatus]]:
    """Chips by host with state and latest verdict, through SQLAlchemy; all hosts when None."""
    from sqlalchemy import JSON, column, select, table

    c = table("chips", column("chip_id"), column("host"), column("index"))
    q = table("quarantine_events", column("chip_id"), column("to_state"), column("at"), column("event_id"), column("details", JSON))
    v = table("verdicts", column("chip_id"), column("kind"), column("severity"), column("score"), column("created_at"), column("verdict_id"))
    wanted = list(hosts) if hosts is not None else None
    chip_query = select(c.c.chip_id, c.c.host, c.c["index"]).order_by(c.c.host, c.c["index"], c.c.chip_id)
    event_query = select(q.c.chip_id, q.c.to_state, q.c.at, q.c.details).order_by(q.c.at, q.c.event_id)
    verdict_query = select(v.c.chip_id, v.c.kind, v.c.severity, v.c.score).order_by(v.c.created_at, v.c.verdict_id)
    with engine.connect() as conn:
        if wanted is not None:
            chips = conn.execute(chip_query.where(c.c.host.in_(wanted))).all()
            ids = [row[0] for row in chips]
            event_query = event_query.where(q.c.chip_id.in_(ids))
            verdict_query = verdict_query.where(v.c.chip_id.in_(ids))
        else:
            chips = conn.execute(chip_query).all()
        return _assemble(chips, conn.execute(event_query).all(), conn.execute(verdict_query).all(), wanted)


def _sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///PATH`` URL, or None for any other URL (or in-memory SQLite)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return path or None


def _sqlite_statuses(path: str, wanted: list[str] | None) -> dict[str, list[ChipStatus]]:
    import sqlite3

    if not os.path.exists(path):
        raise FileNotFoundError(f"no sdc database at {path}; run 'sdc db upgrade'")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        chip_sql = 'SELECT chip_id, host, "index" FROM chips'
        event_sql = "SELECT chip_id, to_state, at, details FROM quarantine_events"
        verdict_sql = "SELECT chip_id, kind, severity, score FROM verdicts"
        if wanted is not None:
            chips = conn.execute(f"{chip_sql} WHERE host IN ({','.join('?' * len(wanted))}) ORDER BY host, \"index\", chip_id", wanted).fetchall()
            ids = [row[0] for row in chips]
            marks = ",".join("?" * len(ids))
            events = conn.execute(f"{event_sql} WHERE chip_id IN ({marks}) ORDER BY at, event_id", ids).fetchall()
            verdicts = conn.execute(f"{verdict_sql} WHERE chip_id IN ({marks}) ORDER BY created_at, verdict_id", ids).fetchall()
        else:
            chips = conn.execute(f'{chip_sql} ORDER BY host, "index", chip_id').fetchall()
            events = conn.execute(f"{event_sql} ORDER BY at, event_id").fetchall()
            verdicts = conn.execute(f"{verdict_sql} ORDER BY created_at, verdict_id").fetchall()
    finally:
        conn.close()
    return _assemble(chips, events, verdicts, wanted)


def read_statuses(url: str, hosts: Iterable[str] | None = None) -> dict[str, list[ChipStatus]]:
    """Statuses by host from a database URL: sqlite3 for a SQLite file, SQLAlchemy otherwise."""
    wanted = list(hosts) if hosts is not None else None
    path = _sqlite_path(url)
    if path is not None:
        return _sqlite_statuses(path, wanted)
    engine = read_engine(url)
    try:
        return node_statuses(engine, wanted)
    finally:
        engine.dispose()


def read_engine(url: str) -> Engine:
    """A plain SQLAlchemy engine for reading, without importing sdc.store.

    Same URL handling as ``sdc.store.engine``: ``postgresql://`` goes through psycopg 3, and
    SQLite waits for a busy writer instead of failing.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        return create_engine(parsed, connect_args={"timeout": 30})
    if parsed.get_backend_name() == "postgresql":
        # `sdc check` must answer within node-problem-detector's timeout even when the server
        # is frozen: give up connecting after 2 s (libpq's minimum), and on a statement after 2 s.
        from sqlalchemy.pool import NullPool

        seconds = max(2, int(os.environ.get("SDC_CHECK_TIMEOUT", "2")))
        options = f"{parsed.query.get('options', '')} -c statement_timeout={seconds * 1000}".strip()
        return create_engine(
            parsed, poolclass=NullPool,
            connect_args={"connect_timeout": seconds, "options": options, "tcp_user_timeout": seconds * 1000},
        )  # fmt: skip
    return create_engine(parsed)
