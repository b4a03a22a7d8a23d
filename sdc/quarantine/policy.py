"""The quarantine policy: the state machine that turns verdicts into transitions.

States: healthy → suspect → quarantined → released | retired. Every transition is an
append-only ``QuarantineEvent`` (actor, reason, time, the verdict behind it); the current
state of a chip is the ``to_state`` of its latest event (``states.current_states``). Pure:
callers pass states, verdicts and the time, and store the events that come back.

A decision sticks until new evidence: a verdict moves a chip only if it reaches into evidence
gathered after the chip's latest transition (``touches_new_evidence``), and a release or a
breaker hold only if it rests on such evidence (``on_new_evidence``: for a slow verdict, a
window of sweeps wholly after it). So neither is ever undone by the evidence already judged.

Policy (automatic, actor ``sdc-analysis``):

- healthy: a high or critical verdict quarantines; a medium verdict makes the chip suspect;
  low verdicts are recorded only.
- suspect: a high or critical verdict on newer evidence, or a medium one resting wholly on
  evidence gathered after the suspicion, quarantines; a newer complete sweep with no such
  verdict clears it back to healthy.
- released (probation, re-tested first): a medium or worse verdict on evidence gathered after
  the release quarantines again; ``probation_sweeps`` clean sweeps return it to healthy.
- quarantined and retired chips change only by hand (``release``, ``retire``, ``replace``).

New quarantines pass the circuit breaker (``breaker``) first: when it trips, none of this
run's new quarantines happen; those chips become suspect instead, marked ``details.breaker``,
and a suspect chip never drains a node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping, Sequence

from sdc.quarantine import breaker
from sdc.quarantine.config import QuarantineConfig
from sdc.quarantine.states import HEALTHY, QUARANTINED, RELEASED, RETIRED, SUSPECT, verdict_rank
from sdc.records import SEVERITY_RANK, QuarantineEvent, Verdict, new_id


class QuarantineError(ValueError):
    """A manual transition that is not allowed; the message says why and what to do."""


@dataclass
class PolicyOutcome:
    events: list[QuarantineEvent] = field(default_factory=list)
    breaker_tripped: bool = False
    refused: list[str] = field(default_factory=list)
    message: str = ""


@dataclass(frozen=True)
class ChipHistory:
    """What the policy needs to know about a chip besides its state."""

    state_since: datetime | None = None  # time of its latest transition
    sweeps_since: int = 0  # complete sweeps with evidence for the chip after state_since
    held: bool = False  # suspect because the circuit breaker held its quarantine back


def apply_policy(
    states: Mapping[str, str],
    verdicts: Sequence[Verdict],
    fleet_size: int,
    recent_quarantines: int,
    now: datetime,
    cfg: QuarantineConfig,
    history: Mapping[str, ChipHistory] | None = None,
) -> PolicyOutcome:
    """Transitions implied by this analysis's verdicts, after the circuit breaker."""
    history = history or {}
    worst: dict[str, Verdict] = {}  # per chip, its worst verdict on evidence newer than its state
    touched: set[str] = set()  # chips with any verdict reaching past their latest transition
    for v in verdicts:
        h = history.get(v.chip_id, ChipHistory())
        state = states.get(v.chip_id, HEALTHY)
        if touches_new_evidence(v, h.state_since):
            touched.add(v.chip_id)
        # A release or a breaker hold was a decision on the evidence of then: only evidence
        # wholly newer may undo it. Otherwise a verdict reaching into newer sweeps counts.
        strict = state == RELEASED or (state == SUSPECT and h.held)
        if not (on_new_evidence if strict else touches_new_evidence)(v, h.state_since):
            continue  # already judged when the chip got its current state
        held = worst.get(v.chip_id)
        if held is None or verdict_rank(v.severity, v.kind) > verdict_rank(held.severity, held.kind):
            worst[v.chip_id] = v

    proposed: list[tuple[str, str, str, Verdict | None, str]] = []  # chip, from, to, verdict, reason
    for chip, v in sorted(worst.items()):
        state = states.get(chip, HEALTHY)
        rank = SEVERITY_RANK[v.severity]
        h = history.get(chip, ChipHistory())
        reason = f"{v.kind} ({v.severity}): {v.summary}"
        if state == HEALTHY:
            if rank >= SEVERITY_RANK["high"]:
                proposed.append((chip, state, QUARANTINED, v, reason))
            elif rank == SEVERITY_RANK["medium"]:
                proposed.append((chip, state, SUSPECT, v, reason))
        elif state == SUSPECT:
            # A medium verdict confirms only on evidence wholly after the suspicion (slow windows overlap).
            wholly_newer = h.state_since is None or (v.first_seen is not None and v.first_seen > h.state_since)
            if rank >= SEVERITY_RANK["high"] or (rank == SEVERITY_RANK["medium"] and wholly_newer):
                proposed.append((chip, state, QUARANTINED, v, "confirmed on newer evidence: " + reason))
        elif state == RELEASED and rank >= SEVERITY_RANK["medium"]:
            proposed.append((chip, state, QUARANTINED, v, "failed probation: " + reason))

    for chip, state in sorted(states.items()):
        if chip in worst or chip in touched:
            continue  # a verdict still reaches into the newer sweeps: not clean
        h = history.get(chip, ChipHistory())
        if state == SUSPECT and h.sweeps_since >= 1:
            proposed.append((chip, state, HEALTHY, None, f"cleared: no verdict over {h.sweeps_since} newer sweep(s)"))
        elif state == RELEASED and h.sweeps_since >= cfg.probation_sweeps:
            proposed.append((chip, state, HEALTHY, None, f"probation passed: {h.sweeps_since} clean sweeps since release"))

    outcome = PolicyOutcome()
    new_quarantines = [p for p in proposed if p[2] == QUARANTINED]
    decision = breaker.decide(len(new_quarantines), recent_quarantines, fleet_size, cfg)
    if decision.tripped:
        outcome.breaker_tripped = True
        outcome.refused = [p[0] for p in new_quarantines]
        outcome.message = decision.message
    for chip, frm, to, v, reason in proposed:
        details: dict = {}
        if outcome.breaker_tripped and to == QUARANTINED:
            if frm == SUSPECT:
                continue
            to, reason = SUSPECT, "circuit breaker held back quarantine: " + reason
            details["breaker"] = True
            if frm == to:
                continue
        if v is not None:
            details.update({"kind": v.kind, "severity": v.severity})
        outcome.events.append(_event(chip, frm, to, cfg.actor, reason, now, v.verdict_id if v else None, details))
    return outcome


def touches_new_evidence(v: Verdict, since: datetime | None) -> bool:
    """Whether any of the evidence behind ``v`` was gathered after ``since``: such a verdict
    keeps a suspect from clearing and a released chip's probation from passing."""
    seen = v.last_seen or v.first_seen
    return since is None or seen is None or seen > since


def on_new_evidence(v: Verdict, since: datetime | None) -> bool:
    """Whether verdict ``v`` rests on evidence gathered after ``since`` (a chip's latest transition).

    For wrong and inconsistent verdicts ``first_seen``/``last_seen`` span the faulty results,
    so one faulty result after ``since`` is new evidence. A slow verdict spans its whole
    window of sweeps, faulty or not, so the whole window must come after ``since``.
    """
    if since is None:
        return True
    if v.kind == "slow":
        return v.first_seen is not None and v.first_seen > since
    seen = v.last_seen or v.first_seen
    return seen is not None and seen > since


def release(states: Mapping[str, str], chip: str, by: str, reason: str, now: datetime) -> QuarantineEvent:
    """Hand a quarantined (or suspect) chip back; it goes on probation and is re-tested first."""
    _require_actor(by, reason, "release")
    state = states.get(chip, HEALTHY)
    if state not in (QUARANTINED, SUSPECT):
        raise QuarantineError(f"release: {chip} is {state}, not quarantined or suspect; nothing to release")
    return _event(chip, state, RELEASED, by, reason, now, None, {"manual": True})


def retire(states: Mapping[str, str], chip: str, by: str, reason: str, now: datetime) -> QuarantineEvent:
    """Take a chip out of service for good (it stays in the history)."""
    _require_actor(by, reason, "retire")
    state = states.get(chip, HEALTHY)
    if state == RETIRED:
        raise QuarantineError(f"retire: {chip} is already retired")
    return _event(chip, state, RETIRED, by, reason, now, None, {"manual": True})


def replace_chip(states: Mapping[str, str], chip: str, by: str, reason: str, now: datetime) -> QuarantineEvent:
    """Record that a chip was physically removed (an RMA swap): it is retired and holds no node."""
    _require_actor(by, reason, "replace")
    state = states.get(chip, HEALTHY)
    return _event(chip, state, RETIRED, by, reason, now, None, {"manual": True, "replaced": True})


def _require_actor(by: str, reason: str, what: str) -> None:
    if not (by or "").strip():
        raise QuarantineError(f"{what}: say who you are with --by NAME")
    if not (reason or "").strip():
        raise QuarantineError(f"{what}: give a reason with --reason TEXT (it is kept in the chip's history)")


def _event(chip, frm, to, actor, reason, at, verdict_id, details) -> QuarantineEvent:
    return QuarantineEvent(
        event_id=new_id(), chip_id=chip, from_state=frm, to_state=to, actor=actor, reason=reason[:2000],
        at=at, verdict_id=verdict_id, details=details,
    )
