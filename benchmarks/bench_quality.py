"""Detection quality on simulated fleets: false quarantines and how fast planted faults are caught.

Replays each fleet sweep by sweep through ``sdc.analysis`` and the quarantine policy (no
database) and prints the issue's quality figures over many seeds, against the targets:

    .venv/bin/python benchmarks/bench_quality.py                 # 2,000 chips x 20 sweeps x 20 seeds, daily and weekly
    .venv/bin/python benchmarks/bench_quality.py --chips 500 --seeds 5 --cadence weekly

Healthy noise and planted faults are described in ``sdc.sim.fleet``. The baseline printed
alongside is the Meta fleet figure: 70% of SDC chips found within 15 days of testing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from sdc.sim.fleet import FAULT_KINDS, FleetSpec, SimulatedFleet  # noqa: E402
from sdc.sim.replay import replay, summarize  # noqa: E402

TARGETS = {"persistent": 1.0, "intermittent": 0.95, "slow": 0.95, "slow5": 0.95, "nondeterministic": 0.95}
DEADLINE_TEXT = {"persistent": "the first complete sweep", "intermittent": "10 sweeps", "slow": "3 sweeps",
                 "slow5": "3 sweeps", "nondeterministic": "3 sweeps", "unreliable": "3 sweeps", "degrading": "10 sweeps"}
CADENCES = {"daily": 24.0, "weekly": 168.0}


def one(args: tuple[int, int, int, int, float]):
    chips, sweeps, seed, per_kind, hours = args
    faults = {k: per_kind for k in FAULT_KINDS}
    fleet = SimulatedFleet(FleetSpec(chips=chips, sweeps=sweeps, faults=faults, sweep_interval_hours=hours), seed=seed)
    result = replay(fleet)
    # Healthy chips throttled 5-10 % in single sweeps (never two in a row, no chronic
    # throttling), and how many of them were quarantined: the 7 %-once target.
    deep = fleet.deep_throttles
    twice = (deep[1:] & deep[:-1]).any(axis=0)
    once = deep.any(axis=0) & ~twice & ~fleet.chronic_throttler
    chips = set(np.flatnonzero(once).tolist()) - set(fleet.faults)
    return result, len(chips), sum(1 for c in result.quarantined_at if c in chips)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=2000)
    parser.add_argument("--sweeps", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--faults-per-kind", type=int, default=3, help="planted chips of each fault kind per fleet")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cadence", choices=[*CADENCES, "both"], default="both")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ok = True
    report: dict[str, object] = {}
    for cadence in (CADENCES if args.cadence == "both" else [args.cadence]):
        start = time.perf_counter()
        jobs = [(args.chips, args.sweeps, seed, args.faults_per_kind, CADENCES[cadence]) for seed in range(args.seeds)]
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            outcomes = list(pool.map(one, jobs))
        figures = summarize([o[0] for o in outcomes])
        throttled, throttled_q = sum(o[1] for o in outcomes), sum(o[2] for o in outcomes)
        figures["throttled_healthy_chips"], figures["throttled_healthy_quarantined"] = throttled, throttled_q
        report[cadence] = figures
        if args.json:
            continue
        elapsed = time.perf_counter() - start
        print(f"quality, {cadence} sweeps: {args.seeds} seeds x {args.chips} chips x {args.sweeps} sweeps "
              f"({args.seeds * args.chips:,} chip-runs), {elapsed:.0f} s")
        fq = figures["false_quarantines_per_10k_chips_per_30_sweeps"]
        print(f"  false quarantines: {figures['false_quarantines']} -> {fq:.2f} per 10,000 healthy chips per 30 sweeps (target <= 1)"
              f"{'  ok' if fq <= 1.0 else '  ABOVE TARGET'}")
        print(f"  healthy chips throttled 5-10 % in single sweeps: {throttled:,}, quarantined: {throttled_q} (target 0)"
              f"{'  ok' if throttled_q == 0 else '  ABOVE TARGET'}")
        print(f"  false suspects (not quarantined): {figures['false_suspects']}; circuit-breaker trips: {figures['breaker_trips']}")
        ok &= fq <= 1.0 and throttled_q == 0
        for kind, deadline in DEADLINE_TEXT.items():
            f = figures[kind]
            target = TARGETS.get(kind)
            verdict = "" if target is None else ("  ok" if f["rate"] >= target else "  BELOW TARGET")
            ok &= target is None or f["rate"] >= target
            print(f"  {kind:16s} quarantined within {deadline}: {f['quarantined_in_time']}/{f['judged']} = {f['rate']:.1%}"
                  f" (flagged {f['flagged_in_time']}){'' if target is None else f'; target >= {target:.0%}'}{verdict}")
        caught = sum(figures[k]["quarantined_in_time"] for k in ("persistent", "intermittent", "nondeterministic"))
        judged = sum(figures[k]["judged"] for k in ("persistent", "intermittent", "nondeterministic"))
        print(f"  SDC chips (wrong or inconsistent) caught within their deadline: {caught / judged:.1%}"
              f" vs Meta's 70% within 15 days: ratio {caught / judged / 0.70:.2f}")
    if args.json:
        print(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
