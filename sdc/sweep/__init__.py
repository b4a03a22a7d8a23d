"""Node sweeps: run the probe suite on this node's chips and turn what happens into records.

``plan`` says what runs on a chip (cut to a budget by ``budget``), ``runner`` runs it in
``worker`` processes under a watchdog, ``node_sweep`` is the one sweep ``sdc sweep`` and the
agent both run (outbox first, abandoned sweeps marked, probation first, spooled when the
database is down), and ``selftest`` proves the detector catches a planted fault.
"""

from sdc.sweep.plan import SweepOptions, chip_plan, plan, probation_first
from sdc.sweep.runner import (
    ChipSummary,
    StopFlag,
    SweepSummary,
    run_case,
    run_sweep,
    to_result,
)

__all__ = [
    "ChipSummary", "StopFlag", "SweepOptions", "SweepSummary", "chip_plan", "plan", "probation_first", "run_case",
    "run_sweep", "to_result",
]
