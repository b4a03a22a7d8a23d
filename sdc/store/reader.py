"""Reading evidence back: records for export, columns for analysis.

Analysis reads millions of probe results; building an ORM object per row would dominate its
run time, so ``probe_result_columns`` runs one Core query and returns numpy arrays.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Iterator, Sequence

import numpy as np
from sqlalchemy import Engine, select

from sdc.records import BY_KIND, WRITE_ORDER, Record
from sdc.store.models import ROW_TYPES, ChipRow, ProbeResultRow, QuarantineEventRow, SweepRow

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


def probe_result_columns(
    engine: Engine, since: datetime | None = None, complete_only: bool = True
) -> dict[str, np.ndarray]:
    """Probe results as columns, joined with chip model and sweep host, for the analysis.

    Only results of ``complete`` sweeps are returned unless asked: an incomplete sweep is not
    evidence. Times come back as float seconds since the epoch.
    """
    r, c, s = ProbeResultRow.__table__, ChipRow.__table__, SweepRow.__table__
    query = (
        select(
            r.c.result_id, r.c.sweep_id, r.c.chip_id, c.c.model, c.c.host, r.c.probe, r.c.probe_version,
            r.c.case_key, r.c.seed, r.c.status, r.c.stack_hash, r.c.digest, r.c.reference_digest,
            r.c.repeats, r.c.distinct_repeat_digests, r.c.throughput, r.c.observed_at,
        )
        .join(c, c.c.chip_id == r.c.chip_id)
        .join(s, s.c.sweep_id == r.c.sweep_id)
    )
    if complete_only:
        query = query.where(s.c.status == "complete")
    if since is not None:
        query = query.where(r.c.observed_at >= since)
    names = [
        "result_id", "sweep_id", "chip_id", "model", "host", "probe", "probe_version", "case_key", "seed",
        "status", "stack_hash", "digest", "reference_digest", "repeats", "distinct_repeat_digests",
        "throughput", "observed_at",
    ]
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    columns = list(zip(*rows)) if rows else [()] * len(names)
    out: dict[str, np.ndarray] = {}
    for name, values in zip(names, columns):
        if name in ("probe_version", "seed", "repeats", "distinct_repeat_digests"):
            out[name] = np.asarray(values, dtype=np.int64)
        elif name == "throughput":
            out[name] = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
        elif name == "observed_at":
            out[name] = np.asarray([v.timestamp() for v in values], dtype=np.float64)
        else:
            out[name] = np.asarray(values, dtype=object)
    return out
