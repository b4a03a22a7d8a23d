"""The quarantine state machine: transitions, manual release/retire, probation, circuit breaker."""

from datetime import datetime, timedelta, timezone

import pytest

from sdc.quarantine.breaker import recent_quarantine_count
from sdc.quarantine.config import QuarantineConfig
from sdc.quarantine.policy import (
    ChipHistory,
    QuarantineError,
    apply_policy,
    release,
    replace_chip,
    retire,
)
from sdc.quarantine.states import probation_chips
from sdc.records import Verdict

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
CFG = QuarantineConfig()


def verdict(chip, severity="high", kind="wrong", first_seen=NOW, last_seen=NOW):
    return Verdict(verdict_id=f"v-{chip}-{severity}", analysis_id="a", chip_id=chip, kind=kind, severity=severity,
                   k=1, n=10, summary=f"{chip} is {kind}", created_at=NOW, first_seen=first_seen, last_seen=last_seen)


def moves(outcome):
    return {e.chip_id: (e.from_state, e.to_state) for e in outcome.events}


def test_severity_decides_between_suspect_and_quarantine_and_low_changes_nothing():
    out = apply_policy({}, [verdict("a", "critical"), verdict("b", "high"), verdict("c", "medium"), verdict("d", "low")], 100, 0, NOW, CFG)
    assert moves(out) == {"a": ("healthy", "quarantined"), "b": ("healthy", "quarantined"), "c": ("healthy", "suspect")}
    event = out.events[0]
    assert event.actor == "sdc-analysis" and event.verdict_id == "v-a-critical" and "is wrong" in event.reason


def test_suspect_is_quarantined_only_on_evidence_gathered_after_the_suspicion():
    since = NOW - timedelta(days=2)
    overlapping = verdict("s", "medium", kind="slow", first_seen=since - timedelta(days=1))
    history = {"s": ChipHistory(since, 2)}
    assert moves(apply_policy({"s": "suspect"}, [overlapping], 100, 0, NOW, CFG, history)) == {}
    newer = verdict("s", "medium", kind="slow", first_seen=since + timedelta(hours=1))
    assert moves(apply_policy({"s": "suspect"}, [newer], 100, 0, NOW, CFG, history)) == {"s": ("suspect", "quarantined")}


def test_suspect_without_verdict_on_newer_sweeps_is_cleared():
    out = apply_policy({"s": "suspect"}, [], 100, 0, NOW, CFG, {"s": ChipHistory(NOW - timedelta(days=1), 1)})
    assert moves(out) == {"s": ("suspect", "healthy")}
    assert moves(apply_policy({"s": "suspect"}, [], 100, 0, NOW, CFG, {"s": ChipHistory(NOW, 0)})) == {}


def test_release_needs_actor_and_reason_and_puts_the_chip_on_probation():
    with pytest.raises(QuarantineError, match="--by"):
        release({"q": "quarantined"}, "q", "", "fixed", NOW)
    with pytest.raises(QuarantineError, match="--reason"):
        release({"q": "quarantined"}, "q", "ana", "  ", NOW)
    with pytest.raises(QuarantineError, match="healthy"):
        release({}, "h", "ana", "why", NOW)
    event = release({"q": "quarantined"}, "q", "ana", "reseated the card", NOW)
    assert (event.from_state, event.to_state, event.actor, event.reason) == ("quarantined", "released", "ana", "reseated the card")
    states = {"q": "released", "x": "healthy", "r": "retired"}
    assert probation_chips(states) == ["q"]
    released_at = NOW - timedelta(hours=1)
    # The evidence judged before the release does not bring the chip back: the release sticks.
    old = verdict("q", "critical", first_seen=NOW - timedelta(days=3), last_seen=released_at - timedelta(hours=2))
    assert moves(apply_policy(states, [old], 100, 0, NOW, CFG, {"q": ChipHistory(released_at, 0)})) == {}
    # On probation a medium verdict on evidence gathered after the release quarantines again.
    new = verdict("q", "medium", first_seen=NOW - timedelta(days=3), last_seen=NOW)
    out = apply_policy(states, [new], 100, 0, NOW, CFG, {"q": ChipHistory(released_at, 1)})
    assert moves(out) == {"q": ("released", "quarantined")} and out.events[0].reason.startswith("failed probation")
    # probation_sweeps clean sweeps end probation; fewer do not, nor does a verdict reaching into them.
    assert moves(apply_policy(states, [], 100, 0, NOW, CFG, {"q": ChipHistory(released_at, CFG.probation_sweeps - 1)})) == {}
    slow = verdict("q", "medium", kind="slow", first_seen=released_at - timedelta(days=1), last_seen=NOW)
    assert moves(apply_policy(states, [slow], 100, 0, NOW, CFG, {"q": ChipHistory(released_at, CFG.probation_sweeps)})) == {}
    passed = apply_policy(states, [old], 100, 0, NOW, CFG, {"q": ChipHistory(released_at, CFG.probation_sweeps)})
    assert moves(passed) == {"q": ("released", "healthy")}


def test_retire_from_any_state_once_and_quarantined_chips_stay_put():
    assert retire({"q": "quarantined"}, "q", "ana", "RMA", NOW).to_state == "retired"
    with pytest.raises(QuarantineError, match="already retired"):
        retire({"q": "retired"}, "q", "ana", "RMA", NOW)
    assert moves(apply_policy({"q": "quarantined", "r": "retired"}, [verdict("q"), verdict("r")], 100, 0, NOW, CFG)) == {}


def test_circuit_breaker_refuses_mass_quarantine_and_says_so():
    verdicts = [verdict(f"c{i}") for i in range(6)]
    out = apply_policy({}, verdicts, 100, 0, NOW, CFG)  # 6 of 100 > 5%
    assert out.breaker_tripped and "CIRCUIT BREAKER" in out.message and len(out.refused) == 6
    assert {to for _, to in moves(out).values()} == {"suspect"}
    assert all(e.details.get("breaker") for e in out.events)
    # Within the share it quarantines; earlier quarantines in the window count against it.
    assert not apply_policy({}, verdicts[:5], 100, 0, NOW, CFG).breaker_tripped
    assert apply_policy({}, verdicts[:3], 100, 3, NOW, CFG).breaker_tripped


def test_recent_quarantines_are_those_of_the_analysis_inside_the_window():
    out = apply_policy({}, [verdict("a"), verdict("b")], 100, 0, NOW - timedelta(hours=30), CFG)
    manual = retire({}, "c", "ana", "x", NOW)
    later = apply_policy({}, [verdict("d")], 100, 0, NOW - timedelta(hours=1), CFG)
    assert recent_quarantine_count(out.events + later.events + [manual], NOW, CFG) == 1


def test_breaker_held_chips_are_not_requarantined_on_the_evidence_that_tripped_it():
    tripped_at = NOW - timedelta(hours=2)
    stale = [verdict(f"c{i}", "critical", last_seen=tripped_at - timedelta(hours=1)) for i in range(6)]
    held = {f"c{i}": "suspect" for i in range(6)}
    # The operator raised breaker_share (or fixed the probe): old evidence quarantines nothing.
    generous = QuarantineConfig(breaker_share=0.5)
    assert moves(apply_policy(held, stale, 100, 0, NOW, generous, {c: ChipHistory(tripped_at, 0, True) for c in held})) == {}
    # Nor does a slow window that merely reaches past the trip.
    slow = verdict("c0", "high", kind="slow", first_seen=tripped_at - timedelta(days=1), last_seen=NOW)
    assert moves(apply_policy(held, [slow], 100, 0, NOW, generous, {"c0": ChipHistory(tripped_at, 1, True)})) == {}
    assert moves(apply_policy(held, [slow], 100, 0, NOW, generous, {"c0": ChipHistory(tripped_at, 1)})) == {"c0": ("suspect", "quarantined")}
    # A newer clean sweep clears them; a newer wrong result on one chip quarantines that chip.
    fresh = verdict("c0", "critical", last_seen=NOW)
    out = apply_policy(held, stale[1:] + [fresh], 100, 0, NOW, generous, {c: ChipHistory(tripped_at, 1, True) for c in held})
    assert moves(out) == {"c0": ("suspect", "quarantined"), **{f"c{i}": ("suspect", "healthy") for i in range(1, 6)}}


def test_the_verdict_behind_a_transition_is_the_worst_by_severity_then_kind_whatever_the_order():
    kinds = [("slow", "high"), ("inconsistent", "high"), ("wrong", "critical"), ("wrong", "low")]
    for rotation in range(len(kinds)):
        order = kinds[rotation:] + kinds[:rotation]
        vs = [verdict("a", severity, kind=kind) for kind, severity in order]
        (event,) = apply_policy({}, vs, 100, 0, NOW, CFG).events
        assert (event.details["kind"], event.details["severity"]) == ("wrong", "critical")
        ties = [verdict("b", "high", kind=k) for k, _ in order if k != "wrong"] + [verdict("b", "high", kind="wrong")]
        (event,) = apply_policy({}, ties[::-1] if rotation % 2 else ties, 100, 0, NOW, CFG).events
        assert event.details["kind"] == "wrong"


def test_replace_retires_a_chip_that_is_physically_gone_with_an_audit_trail():
    event = replace_chip({"q": "quarantined"}, "q", "ana", "RMA 4711: card swapped", NOW)
    assert (event.from_state, event.to_state, event.actor) == ("quarantined", "retired", "ana")
    assert event.details == {"manual": True, "replaced": True} and event.reason == "RMA 4711: card swapped"
    with pytest.raises(QuarantineError, match="--by"):
        replace_chip({}, "q", " ", "x", NOW)
