"""Reading records back for export, and each chip's current quarantine state.

The analysis reads its evidence as columns through ``sdc.store.evidence``.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Iterator, Sequence

from sqlalchemy import Engine, select

from sdc.records import BY_KIND, WRITE_ORDER, Record
from sdc.store.models import ROW_TYPES, QuarantineEventRow

TIME_COLUMN = {
    "chip": "observed_at",
    "sweep": "started_at",
    "probe_result": "observed_at",
    "job_event": "observed_at",
    "verdict": "created_at",
    "quarantine_event": "at",
}


def iter_records(
    engine: Engine,
    kinds: Sequence[str] = WRITE_ORDER,
    since: datetime | None = None,
    batch: int = 10_000,
) -> Iterator[Record]:
    """Every stored record of the given kinds, parents first, oldest first within a kind."""
    for kind in WRITE_ORDER:
        if kind not in kinds:
            continue
        cls = BY_KIND[kind]
        table = ROW_TYPES[kind].__table__
        names = [f.name for f in fields(cls)]
        time_col = table.c[TIME_COLUMN[kind]]
        query = select(*(table.c[n] for n in names)).order_by(time_col, table.primary_key.columns.values()[0])
        if since is not None:
            query = query.where(time_col >= since)
        with engine.connect() as connection:
            result = connection.execution_options(stream_results=True, yield_per=batch).execute(query)
            for row in result:
                yield cls(**dict(zip(names, row)))


def chip_states(engine: Engine) -> dict[str, str]:
    """Current quarantine state per chip: the ``to_state`` of its latest transition.

    Chips with no transition are healthy and are absent from the mapping.
    """
    table = QuarantineEventRow.__table__
    states: dict[str, str] = {}
    with engine.connect() as connection:
        rows = connection.execute(select(table.c.chip_id, table.c.to_state).order_by(table.c.at, table.c.event_id))
        for chip_id, to_state in rows:
            states[chip_id] = to_state
    return states
