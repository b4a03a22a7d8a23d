"""Per-node chip states for the hand-offs: a few indexed queries, nothing heavy imported.

``sdc check`` runs every minute on every node, so this module reads only the rows of the
hosts asked for and imports only SQLAlchemy and the table definitions. A chip's state is the
``to_state`` of its latest *applied* quarantine event; dry-run events (``details.dry_run``)
never change what a hand-off does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

import os
import socket

from sqlalchemy import Engine, select

from sdc.store.models import ChipRow, QuarantineEventRow, VerdictRow

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
    c, q, v = ChipRow.__table__, QuarantineEventRow.__table__, VerdictRow.__table__
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
        kind, severity, score = verdicts.get(chip_id, (None, None, None))
        out.setdefault(host, []).append(ChipStatus(chip_id, host, index, state, since, kind, severity, score))
    return out
