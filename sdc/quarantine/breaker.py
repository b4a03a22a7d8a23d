"""The circuit breaker: refuses to quarantine more than ``breaker_share`` of the fleet (at least
one chip) within ``breaker_window_hours``.

A mass "failure" is far more likely a bad probe, stack or analysis than many chips dying at
once. When it trips, none of the analysis's new quarantines happen; the policy marks those
chips suspect instead and the outcome says so loudly. Pure: callers pass counts and events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Sequence

from sdc.quarantine.config import QuarantineConfig
from sdc.quarantine.states import QUARANTINED
from sdc.records import QuarantineEvent


@dataclass(frozen=True)
class BreakerDecision:
    tripped: bool
    message: str = ""


def decide(new_quarantines: int, recent_quarantines: int, fleet_size: int, cfg: QuarantineConfig) -> BreakerDecision:
    """Whether ``new_quarantines`` more, on top of ``recent_quarantines``, trip the breaker."""
    allowance = max(1, math.floor(cfg.breaker_share * fleet_size)) - recent_quarantines
    if new_quarantines <= max(allowance, 0):
        return BreakerDecision(False)
    return BreakerDecision(
        True,
        f"CIRCUIT BREAKER TRIPPED: this analysis would quarantine {new_quarantines} chips on top of "
        f"{recent_quarantines} in the last {cfg.breaker_window_hours:g} h, more than {cfg.breaker_share:.0%} of "
        f"the {fleet_size}-chip fleet. No chip was quarantined; they are marked suspect. Check for a bad probe, "
        f"stack or data before quarantining by hand, or raise [analysis] breaker_share.",
    )


def recent_quarantine_count(events: Sequence[QuarantineEvent], now: datetime, cfg: QuarantineConfig) -> int:
    """Automatic quarantines inside the breaker window (manual ones are the operator's call)."""
    since = now - timedelta(hours=cfg.breaker_window_hours)
    return sum(1 for e in events if e.to_state == QUARANTINED and e.actor == cfg.actor and e.at >= since)
