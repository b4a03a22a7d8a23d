"""Reading records back: every record for export, and the quarantine history.

The analysis reads its evidence as columns through ``sdc.analysis.load``.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Iterator, Sequence

from sqlalchemy import Engine, select

from sdc.records import BY_KIND, WRITE_ORDER, QuarantineEvent, Record
from sdc.store.models import ROW_TYPES, QuarantineEventRow, QuarantineSequenceRow

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
    chip_ids: Sequence[str] | None = None,
) -> Iterator[Record]:
    """Every stored record of the given kinds, parents first, oldest first within a kind.

    With ``chip_ids``, only the records about those chips: the chips, their results and the
    sweeps those belong to (so the export ingests on its own), their job events, verdicts and
    quarantine events.
    """
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
        if chip_ids is not None:
            if kind == "sweep":
                results = ROW_TYPES["probe_result"].__table__
                query = query.where(table.c.sweep_id.in_(select(results.c.sweep_id).where(results.c.chip_id.in_(list(chip_ids)))))
            else:
                query = query.where(table.c.chip_id.in_(list(chip_ids)))
        with engine.connect() as connection:
            result = connection.execution_options(stream_results=True, yield_per=batch).execute(query)
            for row in result:
                yield cls(**dict(zip(names, row)))


def quarantine_events(engine: Engine, chip_id: str | None = None) -> list[QuarantineEvent]:
    """Every quarantine transition (of one chip, if given), in the order the store received them.

    That order is the store's own sequence (``quarantine_sequence``), never the events' clocks:
    an event stamped in the future cannot stay a chip's latest. ``sdc.quarantine.current_states``
    turns them into each chip's current state.
    """
    t, s = QuarantineEventRow.__table__, QuarantineSequenceRow.__table__
    names = [col.name for col in t.columns]
    query = (
        select(*t.columns)
        .select_from(t.outerjoin(s, s.c.event_id == t.c.event_id))
        .order_by(s.c.seq.is_(None), s.c.seq, t.c.at, t.c.event_id)
    )
    if chip_id is not None:
        query = query.where(t.c.chip_id == chip_id)
    with engine.connect() as connection:
        return [QuarantineEvent(**dict(zip(names, row))) for row in connection.execute(query)]
