"""What past sweeps say about the probes themselves: which found faults, and what cases cost.

``sdc sweep --budget`` reads these to choose which probes to run first.
"""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from sdc.store.models import ProbeResultRow, SweepRow


def mismatch_counts(engine: Engine) -> dict[str, int]:
    """Mismatch results per probe over complete sweeps of the whole fleet."""
    r, s = ProbeResultRow.__table__, SweepRow.__table__
    query = (
        select(r.c.probe, func.count())
        .join(s, s.c.sweep_id == r.c.sweep_id)
        .where(r.c.status == "mismatch", s.c.status == "complete")
        .group_by(r.c.probe)
    )
    with engine.connect() as connection:
        return {probe: int(count) for probe, count in connection.execute(query)}


def case_seconds(engine: Engine, chip_model: str | None = None, limit: int = 20_000) -> dict[tuple[str, str], float]:
    """Mean measured seconds (all repeats) per (probe, case key), from the newest results."""
    from sdc.store.models import ChipRow

    r, c = ProbeResultRow.__table__, ChipRow.__table__
    query = select(r.c.probe, r.c.case_key, r.c.timings).where(r.c.status == "ok")
    if chip_model is not None:
        query = query.join(c, c.c.chip_id == r.c.chip_id).where(c.c.model == chip_model)
    query = query.order_by(r.c.observed_at.desc()).limit(limit)
    totals: dict[tuple[str, str], list[float]] = {}
    with engine.connect() as connection:
        for probe, case_key, timings in connection.execute(query):
            if timings:
                totals.setdefault((probe, case_key), []).append(float(sum(timings)))
    return {key: sum(values) / len(values) for key, values in totals.items()}
