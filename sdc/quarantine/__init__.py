"""Quarantine: chip states and the one rule for a chip's current state (``states``), the policy
that turns verdicts into transitions (``policy``), the circuit breaker (``breaker``), their
knobs (``config``) and the analysis run that stores verdicts and transitions (``pipeline``).

``states`` is light (``sdc check`` imports it); import the others from their modules.
"""

from sdc.quarantine.states import (
    DRAIN_STATES,
    FAULT_STATES,
    HEALTHY,
    QUARANTINED,
    RELEASED,
    RETIRED,
    STATES,
    SUSPECT,
    CurrentState,
    current_states,
    probation_chips,
    state_names,
)

__all__ = [
    "DRAIN_STATES", "FAULT_STATES", "HEALTHY", "QUARANTINED", "RELEASED", "RETIRED", "STATES", "SUSPECT",
    "CurrentState", "current_states", "probation_chips", "state_names",
]
