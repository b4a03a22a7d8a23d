"""The states of a chip and the one rule for its current state: the ``to_state`` of its latest
applied quarantine event, in the order the events are given (oldest first).

Dry-run events (``details.dry_run``) record what an analysis *would* do and never change a
state. Every reader (``sdc check``, the hand-offs, reports, the analysis, sweeps) uses
``current_states``. Light on purpose: ``sdc check`` imports it on every node every minute.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping

HEALTHY, SUSPECT, QUARANTINED, RELEASED, RETIRED = "healthy", "suspect", "quarantined", "released", "retired"
STATES = (HEALTHY, SUSPECT, QUARANTINED, RELEASED, RETIRED)
# States a report flags, and the subset that takes a node out of service.
FAULT_STATES = (SUSPECT, QUARANTINED, RETIRED)
DRAIN_STATES = (QUARANTINED, RETIRED)
# How bad a state is, for sorting chips worst first.
STATE_RANK = {HEALTHY: 0, RELEASED: 0, SUSPECT: 1, QUARANTINED: 2, RETIRED: 3}
# Between verdicts of equal severity, the one an operator acts on first: a wrong answer is
# worse than a non-deterministic one, which is worse than a slow chip. Unknown kinds come last.
KIND_RANK = {"wrong": 3, "inconsistent": 2, "slow": 1}


def verdict_rank(severity: str | None, kind: str | None) -> tuple[int, int, str]:
    """Sort key of a verdict, worst last: severity, then kind, then the kind's name (so the
    choice never depends on ids or on the order rows come back in)."""
    from sdc.records import SEVERITY_RANK

    return SEVERITY_RANK.get(severity or "", -1), KIND_RANK.get(kind or "", 0), kind or ""


def is_breaker_hold(details: Any) -> bool:
    """Whether an event is the circuit breaker holding a quarantine back (the chip drains nothing)."""
    details = event_details(details)
    return bool(details.get("breaker"))


def is_replaced(details: Any) -> bool:
    """Whether an event records a chip physically removed (``sdc quarantine replace``)."""
    return bool(event_details(details).get("replaced"))


def event_details(details: Any) -> Mapping:
    """An event's details as a mapping, whether a dict or JSON text (sqlite3 rows)."""
    if isinstance(details, str):  # JSON as text from sqlite3
        try:
            details = json.loads(details or "{}")
        except ValueError:
            return {}
    return details if isinstance(details, Mapping) else {}


@dataclass(frozen=True)
class CurrentState:
    state: str
    since: datetime | None = None  # time of the event that set it
    event: Any = None  # that event (a QuarantineEvent, or a row from a lightweight reader)


def is_dry_run(details: Any) -> bool:
    return bool(event_details(details).get("dry_run"))


def current_states(events: Iterable[Any]) -> dict[str, CurrentState]:
    """Each chip's current state from its events, oldest first.

    An event is anything with ``chip_id``, ``to_state``, ``at`` and ``details`` attributes.
    Chips without an applied event are healthy and are absent from the result.
    """
    current: dict[str, CurrentState] = {}
    for event in events:
        if is_dry_run(event.details):
            continue
        current[event.chip_id] = CurrentState(event.to_state, event.at, event)
    return current


def state_names(events: Iterable[Any]) -> dict[str, str]:
    """``current_states`` as plain state names."""
    return {chip: s.state for chip, s in current_states(events).items()}


def probation_chips(states: Mapping[str, str]) -> list[str]:
    """Chips on probation (released): sweeps test these first."""
    return sorted(chip for chip, state in states.items() if state == RELEASED)
