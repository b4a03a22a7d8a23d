"""Per-node chip states for the hand-offs: a few indexed queries, nothing heavy imported.

``sdc check`` runs every minute on every node, so this module reads only the rows of the
hosts asked for and imports only SQLAlchemy Core: the few columns it reads are named here as
lightweight ``table()`` clauses, because importing ``sdc.store`` (the ORM models, Alembic,
numpy) would cost more than the query itself. A chip's state is the
``to_state`` of its latest *applied* quarantine event; dry-run events (``details.dry_run``)
never change what a hand-off does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

import os
import socket

from sqlalchemy import JSON, Engine, column, create_engine, select, table
from sqlalchemy.engine import make_url

# Mirrors of sdc.store.models' tables, only the columns read here (names must match).
CHIPS = table("chips", column("chip_id"), column("host"), column("index"))
QUARANTINE_EVENTS = table(
    "quarantine_events", column("chip_id"), column("to_state"), column("at"), column("event_id"), column("details", JSON)
)
VERDICTS = table(
    "verdicts", column("chip_id"), column("kind"), column("severity"), column("score"), column("created_at"), column("verdict_id")
)

FAULT_STATES = ("suspect", "quarantined", "retired")
DRAIN_STATES = ("quarantined", "retired")
_RANK = {"healthy": 0, "released": 0, "suspect": 1, "quarantined": 2, "retired": 3}
_SEVERITY = {"low": 0, "medium": 1, "high": 2, "critical": 3}


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
        return _RANK.get(self.state, 0), _SEVERITY.get(self.severity or "", -1)


def node_statuses(engine: Engine, hosts: Iterable[str] | None = None) -> dict[str, list[ChipStatus]]:
    """Chips by host with state and latest verdict; all hosts when ``hosts`` is None."""
    c, q, v = CHIPS, QUARANTINE_EVENTS, VERDICTS
    chip_query = select(c.c.chip_id, c.c.host, c.c.index).order_by(c.c.host, c.c.index, c.c.chip_id)
    wanted = list(hosts) if hosts is not None else None
    if wanted is not None:
        chip_query = chip_query.where(c.c.host.in_(wanted))
    with engine.connect() as conn:
        chips = conn.execute(chip_query).all()
        ids = [row[0] for row in chips]
        event_query = select(q.c.chip_id, q.c.to_state, q.c.at, q.c.details).order_by(q.c.at, q.c.event_id)
        verdict_query = select(v.c.chip_id, v.c.kind, v.c.severity, v.c.score).order_by(v.c.created_at, v.c.verdict_id)
        if wanted is not None:
            event_query = event_query.where(q.c.chip_id.in_(ids))
            verdict_query = verdict_query.where(v.c.chip_id.in_(ids))
        states: dict[str, tuple[str, datetime]] = {}
        for chip_id, to_state, at, details in conn.execute(event_query):
            if not (details or {}).get("dry_run"):
                states[chip_id] = (to_state, at)
        verdicts: dict[str, tuple] = {}
        for chip_id, kind, severity, score in conn.execute(verdict_query):
            verdicts[chip_id] = (kind, severity, score)
    out: dict[str, list[ChipStatus]] = {host: [] for host in (wanted or ())}
    for chip_id, host, index in chips:
        state, since = states.get(chip_id, ("healthy", None))
        if isinstance(since, str):  # SQLite hands Core-typed times back as text
            since = _parse_sqlite_time(since)
        kind, severity, score = verdicts.get(chip_id, (None, None, None))
        out.setdefault(host, []).append(ChipStatus(chip_id, host, index, state, since, kind, severity, score))
    return out


def _parse_sqlite_time(text: str) -> datetime:
    from datetime import timezone

    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def read_engine(url: str) -> Engine:
    """A plain engine for reading, without importing sdc.store (see the module docstring).

    Same URL handling as ``sdc.store.engine``: ``postgresql://`` goes through psycopg 3, and
    SQLite waits for a busy writer instead of failing.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        return create_engine(parsed, connect_args={"timeout": 30})
    if parsed.get_backend_name() == "postgresql":
        return create_engine(parsed, connect_args={"connect_timeout": int(os.environ.get("SDC_CONNECT_TIMEOUT", "5"))})
    return create_engine(parsed)
