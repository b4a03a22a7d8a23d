"""Sweep bookkeeping in the store: sweeps whose process died are marked incomplete."""

from __future__ import annotations

import os

from sqlalchemy import Engine, select, update

from sdc.records import utcnow
from sdc.store.models import SweepRow


def process_alive(pid: int | None) -> bool:
    """Whether process ``pid`` of this host still runs (one we may not signal counts as alive)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_abandoned_sweeps(engine: Engine, host: str) -> list[str]:
    """Mark this host's ``running`` sweeps whose process is gone as ``incomplete``.

    Only this host's sweeps: a pid means nothing on another machine.
    """
    table = SweepRow.__table__
    with engine.begin() as connection:
        rows = connection.execute(
            select(table.c.sweep_id, table.c.pid).where(table.c.host == host, table.c.status == "running")
        ).all()
        dead = [sweep_id for sweep_id, pid in rows if not process_alive(pid) or pid == os.getpid()]
        if dead:
            connection.execute(
                update(table)
                .where(table.c.sweep_id.in_(dead), table.c.status == "running")
                .values(status="incomplete", finished_at=utcnow(), message="sweep process ended before finishing")
            )
    return dead
