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

# One column, at most one row: the fleet's latest analysis_id (none in a store never analysed).
LATEST_ANALYSIS_SQL = (
    "SELECT runs.analysis_id FROM ("
    "SELECT analysis_id, created_at FROM analyses "
    "UNION ALL SELECT analysis_id, MAX(created_at) AS created_at FROM verdicts GROUP BY analysis_id"
    ") runs ORDER BY runs.created_at DESC, runs.analysis_id DESC LIMIT 1"
)

# A WHERE condition on a verdicts query: only the latest analysis's verdicts.
IN_LATEST_ANALYSIS = f"analysis_id = ({LATEST_ANALYSIS_SQL})"
