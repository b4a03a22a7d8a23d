"""Detection quality on simulated fleets: false quarantines and how fast planted faults are caught.

Replays each fleet sweep by sweep through ``sdc.analysis`` and the quarantine policy (no
database) and prints the issue's quality figures over many seeds, against the targets, at
the simulator's default chip-to-chip spread and then as a table over other spreads, with the
slowdown each spread lets the slow test detect (the floor the analysis reports):

    .venv/bin/python benchmarks/bench_quality.py                 # 2,000 chips x 20 sweeps x 20 seeds, daily and weekly
    .venv/bin/python benchmarks/bench_quality.py --chips 500 --seeds 5 --cadence weekly --spreads 0.004 0.015

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

from sdc.analysis.config import AnalysisConfig  # noqa: E402
from sdc.analysis.ledger import analyze_fleet  # noqa: E402
from sdc.analysis.slow import SYNC_JOB_SLOWDOWN  # noqa: E402
from sdc.sim.fleet import FAULT_KINDS, FleetSpec, SimulatedFleet  # noqa: E402
from sdc.sim.replay import replay, summarize  # noqa: E402

TARGETS = {"persistent": 1.0, "intermittent": 0.95, "slow": 0.95, "slow5": 0.95, "nondeterministic": 0.95}
DEADLINE_TEXT = {"persistent": "the first complete sweep", "intermittent": "10 sweeps", "slow": "3 sweeps",
                 "slow5": "3 sweeps", "nondeterministic": "3 sweeps", "unreliable": "3 sweeps", "degrading": "10 sweeps"}
CADENCES = {"daily": 24.0, "weekly": 168.0}


def one(args: tuple[int, int, int, int, float, float]):
    chips, sweeps, seed, per_kind, hours, spread = args
    faults = {k: per_kind for k in FAULT_KINDS}
    fleet = SimulatedFleet(FleetSpec(chips=chips, sweeps=sweeps, faults=faults, sweep_interval_hours=hours,
                                     chip_spread=spread), seed=seed)
    result = replay(fleet)
    last = sweeps - 1
    floors = analyze_fleet(fleet.evidence(upto_round=last), AnalysisConfig(), fleet.round_time(last))[2]
    # Healthy chips throttled 5-10 % in single sweeps (never two in a row, no chronic
    # throttling), and how many of them were quarantined: the 7 %-once target.
    deep = fleet.deep_throttles
    twice = (deep[1:] & deep[:-1]).any(axis=0)
    once = deep.any(axis=0) & ~twice & ~fleet.chronic_throttler
    chips = set(np.flatnonzero(once).tolist()) - set(fleet.faults)
    return result, len(chips), sum(1 for c in result.quarantined_at if c in chips), [f.detectable for f in floors]


def figures_at(args, cadence: str, spread: float) -> dict:
    """The quality figures over ``args.seeds`` fleets at one cadence and chip-to-chip spread."""
    jobs = [(args.chips, args.sweeps, seed, args.faults_per_kind, CADENCES[cadence], spread) for seed in range(args.seeds)]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        outcomes = list(pool.map(one, jobs))
    figures = summarize([o[0] for o in outcomes])
    figures["throttled_healthy_chips"] = sum(o[1] for o in outcomes)
    figures["throttled_healthy_quarantined"] = sum(o[2] for o in outcomes)
    figures["detectable_slowdown"] = float(np.median([d for o in outcomes for d in o[3]]))
    figures["chip_spread"] = spread
    return figures


def spread_table(args, cadence: str) -> tuple[bool, dict]:
    """One row per spread: every quality target, and the floor of the slow test. 5 % slow is
    held to its target only where the floor the analysis reports lets it be found."""
    ok, rows = True, {}
    print(f"  over chip-to-chip spreads ({cadence}; found within the deadline / judged; * = below target):")
    kinds = [k for k in DEADLINE_TEXT]
    print("    spread  false q/10k/30  throttled-once q  " + "  ".join(f"{k[:8]:>8s}" for k in kinds) + "  5 % floor")
    for spread in args.spreads:
        f = figures_at(args, cadence, spread)
        rows[f"{spread:.3f}"] = f
        fq = f["false_quarantines_per_10k_chips_per_30_sweeps"]
        floor = f["detectable_slowdown"]
        good = fq <= 1.0 and f["throttled_healthy_quarantined"] == 0
        cells = []
        for kind in kinds:
            target = TARGETS.get(kind)
            held = target is not None and not (kind == "slow5" and floor > SYNC_JOB_SLOWDOWN)
            below = held and f[kind]["rate"] < target
            good &= not below
            cells.append(f"{f[kind]['rate']:7.0%}{'*' if below else ' '}")
        ok &= good
        note = "5 % resolvable" if floor <= SYNC_JOB_SLOWDOWN else "5 % below the floor: not held to its target"
        print(f"    {spread:6.1%}  {fq:14.2f}  {f['throttled_healthy_quarantined']:>6d}/{f['throttled_healthy_chips']:<9,d}  "
              + "  ".join(cells) + f"  {floor:5.1%} ({note})")
    return ok, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, default=2000)
    parser.add_argument("--sweeps", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--faults-per-kind", type=int, default=3, help="planted chips of each fault kind per fleet")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cadence", choices=[*CADENCES, "both"], default="both")
    parser.add_argument("--spreads", type=float, nargs="*", default=[0.004, 0.008, 0.015],
                        help="healthy chip-to-chip spreads (share) of the table after the default spread's figures")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ok = True
    report: dict[str, object] = {}
    for cadence in (CADENCES if args.cadence == "both" else [args.cadence]):
        start = time.perf_counter()
        figures = figures_at(args, cadence, FleetSpec.chip_spread)
        throttled, throttled_q = figures["throttled_healthy_chips"], figures["throttled_healthy_quarantined"]
        report[cadence] = figures
        if args.json:
            if cadence == next(iter(report)):
                report[cadence + "_spreads"] = {f"{sp:.3f}": figures_at(args, cadence, sp) for sp in args.spreads}
            continue
        elapsed = time.perf_counter() - start
        print(f"quality, {cadence} sweeps: {args.seeds} seeds x {args.chips} chips x {args.sweeps} sweeps "
              f"({args.seeds * args.chips:,} chip-runs), chip-to-chip spread {FleetSpec.chip_spread:.1%}, {elapsed:.0f} s")
        print(f"  slow test floor (median over fleets and chip models): slowdowns from {figures['detectable_slowdown']:.1%} are found")
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
        if args.spreads and cadence == next(iter(report)):  # the spread moves slow figures, not cadence ones: once
            good, rows = spread_table(args, cadence)
            ok &= good
            report[cadence + "_spreads"] = rows
    if args.json:
        print(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
