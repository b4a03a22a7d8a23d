"""Replay a simulated fleet sweep by sweep through the analysis and the quarantine policy.

After each round of sweeps the whole evidence so far is analysed (as ``sdc analyze`` would be
run by the agent) and the policy applied; the replay notes when each chip was first flagged
(suspect or quarantined) and first quarantined, and scores that against the planted faults.
Used by the quality tests and ``benchmarks/bench_quality.py``. By default the evidence comes
straight from the simulator's arrays (fast); ``stored_evidence`` writes the fleet into a real
store and reads each round back through the production loader (``sdc.analysis.load``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import numpy as np

from sdc.analysis.config import AnalysisConfig
from sdc.analysis.evidence import Evidence
from sdc.analysis.load import load_evidence
from sdc.analysis.ledger import analyze, to_verdicts
from sdc.quarantine.breaker import recent_quarantine_count
from sdc.quarantine.config import QuarantineConfig
from sdc.quarantine.policy import ChipHistory, apply_policy
from sdc.quarantine.states import QUARANTINED, SUSPECT
from sdc.sim.fleet import SimulatedFleet

# Complete sweeps after onset within which each planted fault must be quarantined (the issue's
# targets); "degrading" has no target and is reported only.
DEADLINES = {"persistent": 1, "intermittent": 10, "slow": 3, "slow5": 3, "nondeterministic": 3, "unreliable": 3, "degrading": 10}


@dataclass
class ReplayResult:
    chips: int
    sweeps: int
    flagged_at: dict[int, int] = field(default_factory=dict)  # chip -> round first suspect/quarantined
    quarantined_at: dict[int, int] = field(default_factory=dict)
    breaker_trips: int = 0
    # Per planted chip: (kind, deadline round or None when the run ends before it).
    deadlines: dict[int, tuple[str, int | None]] = field(default_factory=dict)

    def false_quarantines(self) -> int:
        return sum(1 for c in self.quarantined_at if c not in self.deadlines)

    def false_flags(self) -> int:
        return sum(1 for c in self.flagged_at if c not in self.deadlines)

    def detections(self, kind: str, quarantine: bool = True) -> tuple[int, int]:
        """(found in time, judged) for planted chips of ``kind`` whose deadline fell inside the run."""
        when = self.quarantined_at if quarantine else self.flagged_at
        judged = [(c, d) for c, (k, d) in self.deadlines.items() if k == kind and d is not None]
        found = sum(1 for c, d in judged if c in when and when[c] <= d)
        return found, len(judged)


def stored_evidence(fleet: SimulatedFleet, url: str) -> Callable[[int], Evidence]:
    """Write ``fleet`` into the (migrated, empty) store at ``url``; return round -> loaded evidence."""
    from sdc.store import Store

    store = Store(url)
    store.write(list(fleet.records()))
    engine = store.engine()

    def at(round_: int) -> Evidence:
        until = datetime.fromtimestamp(fleet.round_time(round_), tz=timezone.utc)
        return load_evidence(engine, until=until)

    return at


def replay(
    fleet: SimulatedFleet,
    cfg: AnalysisConfig | None = None,
    policy: QuarantineConfig | None = None,
    evidence: Callable[[int], Evidence] | None = None,
) -> ReplayResult:
    """Analyse after every round; ``evidence`` (default: the fleet's arrays) gives each round's."""
    evidence = evidence or (lambda t: fleet.evidence(upto_round=t))
    cfg = cfg or AnalysisConfig()
    policy = policy or QuarantineConfig()
    s = fleet.spec
    result = ReplayResult(chips=s.chips, sweeps=s.sweeps)
    result.deadlines = _deadlines(fleet)
    states: dict[str, str] = {}
    since: dict[str, tuple[datetime, int]] = {}
    events = []
    for t in range(s.sweeps):
        ev = evidence(t)
        now_ts = fleet.round_time(t)
        now = datetime.fromtimestamp(now_ts, tz=timezone.utc)
        findings, chip_ids = analyze(ev, cfg, now_ts)
        if ev.result_id.size == 0:  # loaded from a store: ids stay there (the policy needs none)
            for f in findings:
                f.rows = f.rows[:0]
        verdicts = to_verdicts(findings, chip_ids, ev.result_id, f"replay-{t}", now)
        history = {c: ChipHistory(at, t - r) for c, (at, r) in since.items()}
        outcome = apply_policy(states, verdicts, s.chips, recent_quarantine_count(events, now, policy), now, policy, history)
        result.breaker_trips += outcome.breaker_tripped
        for e in outcome.events:
            states[e.chip_id] = e.to_state
            since[e.chip_id] = (e.at, t)
            events.append(e)
            code = int(e.chip_id.rsplit("-", 1)[1])
            if e.to_state in (SUSPECT, QUARANTINED):
                result.flagged_at.setdefault(code, t)
            if e.to_state == QUARANTINED:
                result.quarantined_at.setdefault(code, t)
    return result


def _deadlines(fleet: SimulatedFleet) -> dict[int, tuple[str, int | None]]:
    """Round by which each planted chip must be caught: its host's Nth complete sweep from onset."""
    out: dict[int, tuple[str, int | None]] = {}
    for chip, fault in fleet.faults.items():
        host = fleet.chip_host[chip]
        rounds = np.flatnonzero(fleet.sweep_complete[fleet.sweep_host == host])
        after = rounds[rounds >= fault.onset]
        need = DEADLINES[fault.kind]
        out[chip] = (fault.kind, int(after[need - 1]) if after.size >= need else None)
    return out


def summarize(results: list[ReplayResult]) -> dict[str, object]:
    """Figures over many seeds: false quarantines per 10,000 chips per 30 sweeps, detection rates."""
    chip_sweeps = sum(r.chips * r.sweeps for r in results)
    healthy_chip_sweeps = chip_sweeps - sum(r.sweeps * len(r.deadlines) for r in results)
    false_q = sum(r.false_quarantines() for r in results)
    false_f = sum(r.false_flags() for r in results)
    out: dict[str, object] = {
        "seeds": len(results),
        "false_quarantines": false_q,
        "false_quarantines_per_10k_chips_per_30_sweeps": false_q / max(healthy_chip_sweeps, 1) * 10_000 * 30,
        "false_suspects": false_f,
        "breaker_trips": sum(r.breaker_trips for r in results),
        "planted": sum(len(r.deadlines) for r in results),
    }
    for kind in DEADLINES:
        found = sum(r.detections(kind)[0] for r in results)
        judged = sum(r.detections(kind)[1] for r in results)
        flagged = sum(r.detections(kind, quarantine=False)[0] for r in results)
        out[kind] = {"quarantined_in_time": found, "flagged_in_time": flagged, "judged": judged,
                     "rate": found / judged if judged else float("nan")}
    return out
