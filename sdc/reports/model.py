"""The quarantine report as plain values: what every renderer and hand-off reads.

``sdc.reports.read.build_report`` fills a frozen ``FleetReport`` from the store; renderers
(table, json, markdown, html) are pure functions of that value, so they are tested without a
database and always agree with each other.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sdc.quarantine.states import FAULT_STATES
from sdc.records import CHIP_STATES
from sdc.reports.actions import Action


@dataclass(frozen=True)
class Identity:
    chip_id: str
    host: str
    index: int
    vendor: str
    model: str
    stack: dict[str, Any] = field(default_factory=dict)
    stack_hash: str = ""


@dataclass(frozen=True)
class VerdictView:
    verdict_id: str
    analysis_id: str
    kind: str
    severity: str
    summary: str
    k: int
    n: int
    created_at: datetime
    statistic: float | None = None
    p_value: float | None = None
    score: float | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None


@dataclass(frozen=True)
class CaseEvidence:
    """One failing case on one chip: what the cohort expected, what the chip gave, when."""

    probe: str
    case: str
    dtype: str
    seed: int
    status: str
    expected_digest: str | None
    observed_digest: str | None
    first_seen: datetime
    last_seen: datetime
    occurrences: int
    reproduced: bool
    message: str = ""


@dataclass(frozen=True)
class Provenance:
    """Who moved the chip to its state, when, why, and whether it was a dry run."""

    actor: str
    at: datetime
    from_state: str
    to_state: str
    reason: str
    dry_run: bool
    verdict_id: str | None = None
    held_by_breaker: bool = False  # suspect because the circuit breaker held a quarantine back
    replaced: bool = False  # retired with ``sdc quarantine replace``: the card has left the machine


@dataclass(frozen=True)
class Throughput:
    """The chip's throughput on one case against its cohort's (same probe, case and model)."""

    probe: str
    case: str
    unit: str
    chip: tuple[float, ...]
    cohort: tuple[float, ...]


@dataclass(frozen=True)
class ChipReport:
    identity: Identity
    state: str
    action: Action
    proposed_state: str | None = None
    provenance: Provenance | None = None
    verdicts: tuple[VerdictView, ...] = ()
    evidence: tuple[CaseEvidence, ...] = ()
    throughput: Throughput | None = None
    mismatches_over_time: tuple[tuple[datetime, int], ...] = ()
    failures: tuple[tuple[str, str, int], ...] = ()  # (probe, dtype, mismatches)

    @property
    def flagged(self) -> bool:
        if self.provenance and self.provenance.replaced and not self.provenance.dry_run:
            return False  # physically gone (an RMA): nothing left to act on, nothing to hold
        return self.state in FAULT_STATES or self.proposed_state in FAULT_STATES or bool(self.verdicts)


@dataclass(frozen=True)
class FleetReport:
    generated_at: datetime
    source: str
    chips: tuple[ChipReport, ...]
    last_sweep_at: datetime | None = None
    precision: tuple[dict, ...] = ()  # stack-level findings (sdc.reports.precision); never flag a chip

    @property
    def flagged(self) -> tuple[ChipReport, ...]:
        return tuple(c for c in self.chips if c.flagged)

    @property
    def state_counts(self) -> dict[str, int]:
        counts = Counter(c.state for c in self.chips)
        return {state: counts.get(state, 0) for state in CHIP_STATES}

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(sorted({c.identity.host for c in self.chips}))


# ---------------------------------------------------------------------------------------
# Reading


