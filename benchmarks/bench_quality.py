"""Detection quality on simulated fleets: false quarantines and how fast planted faults are caught.

Replays each fleet sweep by sweep through ``sdc.analysis`` and the quarantine policy (no
database) and prints the issue's quality figures over many seeds, against the targets:

    .venv/bin/python benchmarks/bench_quality.py                 # 2,000 chips x 20 sweeps x 20 seeds
    .venv/bin/python benchmarks/bench_quality.py --chips 500 --seeds 5

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

from sdc.sim.fleet import FleetSpec, SimulatedFleet  # noqa: E402
from sdc.sim.replay import replay, summarize  # noqa: E402

TARGETS = {"persistent": 1.0, "intermittent": 0.95, "slow": 0.95, "nondeterministic": 0.95}


def one(args: tuple[int, int, int, int]):
    chips, sweeps, seed, per_kind = args
    faults = {k: per_kind for k in ("persistent", "intermittent", "slow", "degrading", "nondeterministic")}
    fleet = SimulatedFleet(FleetSpec(chips=chips, sweeps=sweeps, faults=faults), seed=seed)
    return replay(fleet)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=2000)
    parser.add_argument("--sweeps", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--faults-per-kind", type=int, default=4, help="planted chips of each fault kind per fleet")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    jobs = [(args.chips, args.sweeps, seed, args.faults_per_kind) for seed in range(args.seeds)]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        results = list(pool.map(one, jobs))
    figures = summarize(results)
    elapsed = time.perf_counter() - start
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    healthy = args.chips * args.seeds
    print(f"quality: {args.seeds} seeds x {args.chips} chips x {args.sweeps} sweeps ({healthy:,} chip-runs), {elapsed:.0f} s")
    fq = figures["false_quarantines_per_10k_chips_per_30_sweeps"]
    print(f"  false quarantines: {figures['false_quarantines']} -> {fq:.2f} per 10,000 healthy chips per 30 sweeps (target <= 1)")
    print(f"  false suspects (not quarantined): {figures['false_suspects']}; circuit-breaker trips: {figures['breaker_trips']}")
    ok = fq <= 1.0
    for kind, deadline in (("persistent", "the first complete sweep"), ("intermittent", "10 sweeps"), ("slow", "3 sweeps"),
                           ("nondeterministic", "3 sweeps"), ("degrading", "10 sweeps")):
        f = figures[kind]
        target = TARGETS.get(kind)
        verdict = "" if target is None else ("  ok" if f["rate"] >= target else "  BELOW TARGET")
        ok &= target is None or f["rate"] >= target
        print(f"  {kind:16s} quarantined within {deadline}: {f['quarantined_in_time']}/{f['judged']} = {f['rate']:.1%}"
              f" (flagged {f['flagged_in_time']}){'' if target is None else f'; target >= {target:.0%}'}{verdict}")
    caught = sum(figures[k]["quarantined_in_time"] for k in ("persistent", "intermittent", "nondeterministic"))
    judged = sum(figures[k]["judged"] for k in ("persistent", "intermittent", "nondeterministic"))
    print(f"  SDC chips (wrong or inconsistent) caught within their deadline (<= 10 daily sweeps): {caught / judged:.1%}"
          f" vs Meta's 70% within 15 days: ratio {caught / judged / 0.70:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
