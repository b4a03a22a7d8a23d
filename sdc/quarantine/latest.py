"""Which analysis is the fleet's latest: the one SQL clause that reports, ``sdc check``, the
Slurm/k8s/NPD hand-offs and Prometheus share, so they never disagree about which verdicts count.

An analysis that finds nothing stores no verdict, so "the analysis of the newest verdict"
would keep an old verdict current for ever. Every stored analysis run has a row in
``analyses`` (written by ``sdc.quarantine.pipeline``); verdicts ingested from another store
carry their own ``analysis_id`` and ``created_at`` and count as runs too. The latest is the
newest of both by ``created_at`` (then ``analysis_id``, so ties never depend on row order).
Only verdicts with that ``analysis_id`` are the fleet's current verdicts.

Plain SQL text on purpose: ``sdc check`` runs it through the standard library's sqlite3
without importing SQLAlchemy (see ``sdc.handoffs.state``).
"""

from __future__ import annotations

from datetime import datetime

# One column, at most one row: the fleet's latest analysis_id (none in a store never analysed).
LATEST_ANALYSIS_SQL = (
    "SELECT runs.analysis_id FROM ("
    "SELECT analysis_id, created_at FROM analyses "
    "UNION ALL SELECT analysis_id, MAX(created_at) AS created_at FROM verdicts GROUP BY analysis_id"
    ") runs ORDER BY runs.created_at DESC, runs.analysis_id DESC LIMIT 1"
)

# A WHERE condition on a verdicts query: only the latest analysis's verdicts.
IN_LATEST_ANALYSIS = f"analysis_id = ({LATEST_ANALYSIS_SQL})"


def reaches_past_decision(state: str, decided_at: datetime | None, last_seen: datetime | None, now: datetime) -> bool:
    """Whether a verdict of the latest analysis still speaks about a chip in ``state``.

    A decision sticks until new evidence: a chip released (or returned to healthy) is judged
    only on what was gathered after its latest transition, as the quarantine policy does. The
    analysis right after a release re-derives the old verdicts from the old evidence; they were
    weighed already and flag nothing. Other states keep their verdicts (they say why). A
    transition stamped in the future (a wrong clock) counts as ``now``.
    """
    if state not in ("healthy", "released") or decided_at is None or last_seen is None:
        return True
    return last_seen > min(decided_at, now)
