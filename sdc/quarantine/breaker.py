"""The circuit breaker: refuses to quarantine more than ``breaker_share`` of the fleet (at least
one chip) within ``breaker_window_hours``.

A mass "failure" is far more likely a bad probe, stack or analysis than many chips dying at
once. When it trips, none of the analysis's new quarantines happen; the policy marks those
chips suspect instead (``details.breaker``: held), which drains nothing, and the outcome says
so loudly. The evidence that tripped it was judged then, so it never quarantines the held chips
later (the policy's ``on_new_evidence``). Pure: callers pass counts and events.
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
        f"the {fleet_size}-chip fleet. No chip was quarantined; they are marked suspect (held by the breaker), "
        f"which drains nothing. Check for a bad probe, stack or data. The evidence judged now never quarantines "
        f"them later: a newer sweep clears each held chip or, if it is still faulty, quarantines it. To acknowledge "
        f"the trip, release the chips you have checked ('sdc quarantine release CHIP --by NAME --reason TEXT') "
        f"or raise [analysis] breaker_share before the next sweep.",
    )


def recent_quarantine_count(events: Sequence[QuarantineEvent], now: datetime, cfg: QuarantineConfig) -> int:
    """Automatic quarantines inside the breaker window (manual ones are the operator's call)."""
    since = now - timedelta(hours=cfg.breaker_window_hours)
    return sum(1 for e in events if e.to_state == QUARANTINED and e.actor == cfg.actor and e.at >= since)
