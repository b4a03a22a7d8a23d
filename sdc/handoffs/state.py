"""Per-node chip states for the hand-offs: a few indexed queries, nothing heavy imported.

``sdc check`` runs every minute on every node, so ``read_statuses`` reads only the rows of
the hosts asked for, and for the default store (a SQLite file) through the standard
library's sqlite3: importing SQLAlchemy alone costs more than the query. Other databases go
through SQLAlchemy Core with the few columns named here as lightweight ``table()`` clauses
(never the ORM models, Alembic or numpy of ``sdc.store``). A chip's state is the
``to_state`` of its latest *applied* quarantine event; dry-run events (``details.dry_run``)
never change what a hand-off does.

Whether a chip takes its node out of service is ``ChipStatus.drains``: it is quarantined or
retired, not held back by the circuit breaker (those are suspect), not recorded as replaced,
and still in the machine. A chip has left the machine when the host's latest complete sweep
found another chip at its index (an RMA swap), or, for a retired chip, did not find it at all.
The verdict shown is the one behind the chip's current state, else the worst (by severity,
then kind) of the chip's verdicts in the fleet's latest analysis (``sdc.quarantine.latest``;
none when that analysis found nothing): never a choice left to row order.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple, Sequence

from sdc.quarantine.latest import IN_LATEST_ANALYSIS
from sdc.quarantine.states import (
    DRAIN_STATES,
    FAULT_STATES,
    RETIRED,
    STATE_RANK,
    event_details,
    current_states,
    is_breaker_hold,
    is_replaced,
    verdict_rank,
)

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
    held: bool = False  # suspect because the circuit breaker held a quarantine back
    present: bool = True  # still in the machine (see the module docstring)
    replaced: bool = False  # recorded as physically removed (sdc quarantine replace)

    @property
    def drains(self) -> bool:
        """Whether this chip takes its node out of service."""
        return self.state in DRAIN_STATES and self.present and not self.replaced

    @property
    def rank(self) -> tuple[int, int, int, str]:
        return (int(self.drains), STATE_RANK.get(self.state, 0)) + verdict_rank(self.severity, self.verdict_kind)[:2] + (self.chip_id,)


class _EventRow(NamedTuple):
    chip_id: str
    to_state: str
    at: Any
    details: Any


def _latest_verdicts(verdicts: Iterable) -> dict[str, tuple]:
    """Per chip, the worst (kind, severity, score) of the newest analysis among the rows
    (chip, analysis, kind, severity, score) oldest first; the readers give only the fleet's
    latest analysis."""
    latest: dict[str, tuple[str, list]] = {}
    for chip_id, analysis_id, kind, severity, score in verdicts:
        held = latest.get(chip_id)
        if held is None or held[0] != analysis_id:
            latest[chip_id] = held = (analysis_id, [])
        held[1].append((kind, severity, score))
    return {chip: max(rows, key=lambda r: verdict_rank(r[1], r[0])) for chip, (_, rows) in latest.items()}


def _absent(chips: Sequence, latest_sweep: Iterable) -> tuple[set[str], set[str]]:
    """(chips whose index another chip now answers to, chips the latest sweep did not find),
    from chip rows (id, host, index) and each host's latest complete sweep (rows of host, chip
    id). Only hosts with a complete sweep say anything; a sweep limited with ``--devices``
    misses chips, so only a swap or a retirement lets a missing chip stop holding its node."""
    seen: dict[str, set[str]] = {}
    for host, chip_id in latest_sweep:
        seen.setdefault(host, set()).add(chip_id)
    index_of = {chip_id: (host, index) for chip_id, host, index in chips}
    taken = {index_of[c] for found in seen.values() for c in found if c in index_of}
    swapped = {c for c, slot in index_of.items() if slot in taken and c not in seen.get(slot[0], ())}
    missing = {c for c, (host, _) in index_of.items() if host in seen and c not in seen[host]}
    return swapped, missing


def _assemble(chips: Sequence, events: Iterable, verdicts: Iterable, latest_sweep: Iterable, wanted: list[str] | None) -> dict[str, list[ChipStatus]]:
    """Chip rows (id, host, index), event rows (id, to_state, at, details) in store order,
    verdict rows (id, analysis, kind, severity, score) oldest first, and the chips of each
    host's latest complete sweep (host, id), into statuses by host."""
    current = current_states(_EventRow(*row) for row in events)
    latest = _latest_verdicts(verdicts)
    swapped, missing = _absent(chips, latest_sweep)
    out: dict[str, list[ChipStatus]] = {host: [] for host in (wanted or ())}
    for chip_id, host, index in chips:
        s = current.get(chip_id)
        state, since = (s.state, s.since) if s else ("healthy", None)
        details = event_details(s.event.details) if s else {}
        kind, severity, score = latest.get(chip_id, (None, None, None))
        if details.get("kind") and details.get("severity"):  # the verdict the decision rests on
            kind, severity = details["kind"], details["severity"]
        present = chip_id not in swapped and not (state == RETIRED and chip_id in missing)
        out.setdefault(host, []).append(
            ChipStatus(
                chip_id, host, index, state, _time(since), kind, severity, score,
                held=bool(s) and is_breaker_hold(details), present=present, replaced=bool(s) and is_replaced(details),
            )
        )
    return out


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(str(value))  # SQLite stores UTC as text without a zone
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# The chips of each host's latest complete sweep; {hosts} is empty or "AND host IN (...)".
LATEST_SWEEP_SQL = (
    "SELECT DISTINCT s.host, r.chip_id FROM sweeps s "
    "JOIN (SELECT host, MAX(started_at) AS latest FROM sweeps WHERE status = 'complete' {hosts} GROUP BY host) l "
    "ON s.host = l.host AND s.started_at = l.latest "
    "JOIN probe_results r ON r.sweep_id = s.sweep_id WHERE s.status = 'complete'"
)


def node_statuses(engine: Engine, hosts: Iterable[str] | None = None) -> dict[str, list[ChipStatus]]:
    """Chips by host with state and latest verdict, through SQLAlchemy; all hosts when None."""
    from sqlalchemy import JSON, bindparam, column, select, table, text

    c = table("chips", column("chip_id"), column("host"), column("index"))
    q = table("quarantine_events", column("chip_id"), column("to_state"), column("at"), column("event_id"), column("details", JSON))
    v = table("verdicts", column("chip_id"), column("kind"), column("severity"), column("score"), column("created_at"), column("verdict_id"))
    wanted = list(hosts) if hosts is not None else None
    chip_query = select(c.c.chip_id, c.c.host, c.c["index"]).order_by(c.c.host, c.c["index"], c.c.chip_id)
    seq = table("quarantine_sequence", column("seq"), column("event_id"))
    event_query = (
        select(q.c.chip_id, q.c.to_state, q.c.at, q.c.details)
        .select_from(q.outerjoin(seq, seq.c.event_id == q.c.event_id))
        .order_by(seq.c.seq.is_(None), seq.c.seq, q.c.at, q.c.event_id)  # the store's order, not the clocks'
    )
    v = table("verdicts", column("chip_id"), column("analysis_id"), column("kind"), column("severity"), column("score"),
              column("created_at"), column("verdict_id"))
    verdict_query = (
        select(v.c.chip_id, v.c.analysis_id, v.c.kind, v.c.severity, v.c.score)
        .where(text(IN_LATEST_ANALYSIS))
        .order_by(v.c.created_at, v.c.verdict_id)
    )
    sweep_query = text(LATEST_SWEEP_SQL.format(hosts=""))
    with engine.connect() as conn:
        if wanted is not None:
            chips = conn.execute(chip_query.where(c.c.host.in_(wanted))).all()
            ids = [row[0] for row in chips]
            event_query = event_query.where(q.c.chip_id.in_(ids))
            verdict_query = verdict_query.where(v.c.chip_id.in_(ids))
            sweep_query = text(LATEST_SWEEP_SQL.format(hosts="AND host IN :hosts")).bindparams(bindparam("hosts", wanted, expanding=True))
        else:
            chips = conn.execute(chip_query).all()
        events, verdicts = conn.execute(event_query).all(), conn.execute(verdict_query).all()
        return _assemble(chips, events, verdicts, conn.execute(sweep_query).all(), wanted)


def _sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///PATH`` URL, or None for any other URL (or in-memory SQLite)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return path or None


def _sqlite_statuses(path: str, wanted: list[str] | None) -> dict[str, list[ChipStatus]]:
    import sqlite3

    if not os.path.exists(path):
        raise FileNotFoundError(f"no sdc database at {path}, run sdc db upgrade")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        chip_sql = 'SELECT chip_id, host, "index" FROM chips'
        # In the store's own order (migration 0002_qseq), never by the events' clocks.
        event_sql = "SELECT e.chip_id, e.to_state, e.at, e.details FROM quarantine_events e LEFT JOIN quarantine_sequence s ON s.event_id = e.event_id"
        event_order = "ORDER BY s.seq IS NULL, s.seq, e.at, e.event_id"
        verdict_sql = f"SELECT chip_id, analysis_id, kind, severity, score FROM verdicts WHERE {IN_LATEST_ANALYSIS}"
        if wanted is not None:
            chips = conn.execute(f"{chip_sql} WHERE host IN ({','.join('?' * len(wanted))}) ORDER BY host, \"index\", chip_id", wanted).fetchall()
            ids = [row[0] for row in chips]
            marks = ",".join("?" * len(ids))
            events = conn.execute(f"{event_sql} WHERE e.chip_id IN ({marks}) {event_order}", ids).fetchall()
            verdicts = conn.execute(f"{verdict_sql} AND chip_id IN ({marks}) ORDER BY created_at, verdict_id", ids).fetchall()
            hosts_sql = f"AND host IN ({','.join('?' * len(wanted))})"
            swept = conn.execute(LATEST_SWEEP_SQL.format(hosts=hosts_sql), wanted).fetchall()
        else:
            chips = conn.execute(f'{chip_sql} ORDER BY host, "index", chip_id').fetchall()
            events = conn.execute(f"{event_sql} {event_order}").fetchall()
            verdicts = conn.execute(f"{verdict_sql} ORDER BY created_at, verdict_id").fetchall()
            swept = conn.execute(LATEST_SWEEP_SQL.format(hosts="")).fetchall()
    finally:
        conn.close()
    return _assemble(chips, events, verdicts, swept, wanted)


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
