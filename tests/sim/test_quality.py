"""The issue's quality targets over 20 seeds each, on fleets sized to fit the test budget.

Planted fleets are written into a real SQLite store and every round is read back through the
production loader (``sdc.analysis.load``), at daily and at weekly cadence; the same replay
from the simulator's arrays must decide identically, which is what lets the healthy fleets
(larger, so the false-quarantine bound means something) use the arrays directly.
Real fleets differ in chip-to-chip spread, so the slow and no-false-quarantine targets are
also held at spreads of 0.4, 0.8 and 1.5 % (smaller fleets, 20 seeds each): 5 % slowdowns
wherever the floor the analysis reports allows them, and that floor said out loud where not.
``benchmarks/bench_quality.py`` prints the same figures at 2,000 chips x 20 sweeps x 20 seeds.
Seeds are fixed, so these are reproducible statements about the analysis, not flaky draws.
"""

import numpy as np
import pytest

from sdc.analysis.config import AnalysisConfig
from sdc.analysis.ledger import analyze_fleet
from sdc.analysis.slow import SYNC_JOB_SLOWDOWN
from sdc.sim.fleet import FAULT_KINDS, FleetSpec, SimulatedFleet
from sdc.sim.replay import replay, stored_evidence, summarize
from sdc.store.migrate import upgrade

SEEDS = range(20)
# 5 %-slow chips of the planted fleets whose model's floor allows 5 %: 9 of 20 when written.
RESOLVABLE_AT_160 = 8
CADENCE = {"daily": 24.0, "weekly": 168.0}


@pytest.fixture(scope="module", params=list(CADENCE))
def planted(request, tmp_path_factory):
    results, same, slow5 = [], [], []
    for s in SEEDS:
        spec = FleetSpec(chips=160, sweeps=12, onset_max=1, faults={kind: 1 for kind in FAULT_KINDS},
                         sweep_interval_hours=CADENCE[request.param])
        fleet = SimulatedFleet(spec, seed=1000 + s)
        url = f"sqlite:///{tmp_path_factory.mktemp('fleet')}/sdc.db"
        upgrade(url)
        at = stored_evidence(fleet, url)
        stored = replay(fleet, evidence=at)
        direct = replay(fleet)
        same.append((stored.flagged_at, stored.quarantined_at) == (direct.flagged_at, direct.quarantined_at))
        results.append(stored)
        slow5 += slow5_outcomes(fleet, stored, at)
    return request.param, summarize(results), same, slow5


def slow5_outcomes(fleet, result, at) -> list[tuple[bool, bool]]:
    """Per 5 %-slow chip with a deadline: whether the floor the analysis reported for its chip
    model at the deadline (from the loaded evidence) let it be found, and whether it was."""
    out = []
    for chip, (kind, deadline) in result.deadlines.items():
        if kind != "slow5" or deadline is None:
            continue
        floors = {f.model: f for f in analyze_fleet(at(deadline), AnalysisConfig(), fleet.round_time(deadline))[2]}
        floor = floors[fleet.spec.models[fleet.chip_model[chip]]]
        out.append((floor.detectable <= SYNC_JOB_SLOWDOWN, result.quarantined_at.get(chip, deadline + 1) <= deadline))
    return out


@pytest.fixture(scope="module")
def healthy():
    spec = FleetSpec(chips=400, sweeps=20)
    return summarize([replay(SimulatedFleet(spec, seed=2000 + s)) for s in SEEDS])


# Healthy chip-to-chip spreads of real fleets differ (silicon and power, 0.5-3 %): the slow
# test measures each chip model's spread and needs k of them (AnalysisConfig.slow_spread_k).
SPREADS = (0.004, 0.008, 0.015)


@pytest.fixture(scope="module", params=SPREADS)
def healthy_at_spread(request):
    """20 healthy fleets of 200 chips x 20 sweeps at one spread (the simulator's arrays, which
    decide like the production loader: see the first test), with single-sweep throttles."""
    results, throttled, throttled_q = [], 0, 0
    for s in SEEDS:
        fleet = SimulatedFleet(FleetSpec(chips=200, sweeps=20, chip_spread=request.param), seed=3000 + s)
        result = replay(fleet)
        deep = fleet.deep_throttles  # rounds x chips: 5-10 % slow in that one sweep
        once = np.flatnonzero(deep.any(axis=0) & ~(deep[1:] & deep[:-1]).any(axis=0))
        throttled += once.size
        throttled_q += sum(1 for c in once if c in result.quarantined_at)
        results.append(result)
    return request.param, summarize(results), throttled, throttled_q


@pytest.fixture(scope="module", params=SPREADS)
def slow_at_spread(request, tmp_path_factory):
    """20 fleets of 96 chips x 6 sweeps at one spread, two 10-30 %-slow and two 5 %-slow chips
    each from the first sweep, through a real store and the production loader. Per fleet the
    floors the analysis reports at the end, and ``slow5_outcomes``."""
    results, floors, slow5 = [], [], []
    for s in SEEDS:
        spec = FleetSpec(chips=96, sweeps=6, onset_max=0, chip_spread=request.param, faults={"slow": 2, "slow5": 2})
        fleet = SimulatedFleet(spec, seed=4000 + s)
        url = f"sqlite:///{tmp_path_factory.mktemp('spread')}/sdc.db"
        upgrade(url)
        at = stored_evidence(fleet, url)
        result = replay(fleet, evidence=at)
        results.append(result)
        last = spec.sweeps - 1
        floors += analyze_fleet(at(last), AnalysisConfig(), fleet.round_time(last))[2]
        slow5 += slow5_outcomes(fleet, result, at)
    return request.param, summarize(results), floors, slow5


def test_the_production_loader_and_the_simulators_arrays_decide_the_same(planted):
    _, _, same, _ = planted
    assert all(same)


def test_healthy_fleets_quarantine_no_chip(healthy):
    # 8,000 healthy chip-runs of 20 sweeps, with deep one-sweep throttles, slow nodes, late
    # hosts and divergent digests: the target (1 per 10,000 chips per 30 sweeps) allows 0.53
    # here, so none may be quarantined. Suspects (not acted on) stay rare too.
    assert healthy["false_quarantines"] == 0
    assert healthy["false_suspects"] <= 5
    assert healthy["breaker_trips"] == 0


def test_persistently_wrong_chips_are_quarantined_after_the_first_sweep_covering_the_unit(planted):
    _, figures, _, _ = planted
    assert figures["persistent"]["judged"] == 20
    assert figures["persistent"]["rate"] == 1.0


@pytest.mark.parametrize("kind", ["intermittent", "slow", "nondeterministic", "unreliable"])
def test_faults_are_quarantined_within_their_deadline_in_95_percent(planted, kind):
    # Intermittent (1 % of runs) within 10 sweeps at weekly cadence too: evidence is counted
    # over sweeps, not aged by days.
    _, figures, _, _ = planted
    assert figures[kind]["judged"] >= 17  # late hosts and killed sweeps leave a few without a deadline
    assert figures[kind]["rate"] >= 0.95


def test_five_percent_slow_chips_are_quarantined_within_3_sweeps_where_the_floor_allows_it(planted):
    # 5 % against a 0.6 % chip-to-chip spread is near the edge for ~80 chips of a model: the
    # spread they measure varies by ~15 %, and where it comes out high the floor says that 5 %
    # is out of reach. Where the floor allows it, the target holds. (2,000-chip fleets resolve
    # 5 % every time: benchmarks/bench_quality.py.)
    _, _, _, slow5 = planted
    resolvable = [found for allowed, found in slow5 if allowed]
    assert len(slow5) >= 17 and len(resolvable) >= RESOLVABLE_AT_160
    assert sum(resolvable) >= 0.95 * len(resolvable), (sum(resolvable), len(resolvable))


def test_planted_fleets_have_no_false_quarantine_among_their_healthy_chips(planted):
    _, figures, _, _ = planted
    assert figures["false_quarantines"] == 0


def test_no_healthy_chip_is_quarantined_whatever_the_chip_to_chip_spread(healthy_at_spread):
    # 4,000 healthy chip-runs of 20 sweeps per spread (the target allows 0.27): none, and
    # none of the chips throttled 5-10 % in a single sweep.
    spread, figures, throttled, throttled_q = healthy_at_spread
    assert figures["false_quarantines"] == 0, spread
    assert figures["false_quarantines_per_10k_chips_per_30_sweeps"] <= 1.0
    assert throttled >= 500 and throttled_q == 0
    assert figures["breaker_trips"] == 0


def test_slow_chips_are_found_as_far_as_the_measured_spread_allows(slow_at_spread):
    spread, figures, floors, slow5 = slow_at_spread
    assert figures["false_quarantines"] == 0, spread
    # 10-30 % slow: found within 3 sweeps at every spread tested (up to 1.5 %).
    assert figures["slow"]["judged"] >= 34 and figures["slow"]["rate"] >= 0.95, (spread, figures["slow"])
    # The spread measured is the one planted (with the window's timing noise on top).
    measured = float(np.median([f.spread for f in floors]))
    assert spread * 0.9 <= measured <= spread * 1.35 + 0.002, (spread, measured)
    # 5 % slow: found within 3 sweeps wherever the analysis says its chip model's floor
    # allows it. With slow_spread_k = 4 that is a spread up to about 0.8 % on big fleets (a model of a
    # few chips measures its spread roughly and says so with a higher floor); beyond, the
    # output says that 5 % is below what the fleet can resolve: never a quiet miss.
    resolvable = [found for allowed, found in slow5 if allowed]
    floor = float(np.median([f.detectable for f in floors]))
    if spread <= 0.005:
        assert len(resolvable) >= 0.9 * len(slow5) >= 30 and floor <= SYNC_JOB_SLOWDOWN
        assert sum(resolvable) >= 0.95 * len(resolvable), (spread, sum(resolvable), len(resolvable))
    elif resolvable:
        # A fleet whose ~48 chips of a model measured their spread low by chance sits at the
        # edge of resolution (the estimate varies by ~15 %): most, not 95 %, are found there.
        assert sum(resolvable) >= 0.8 * len(resolvable), (spread, sum(resolvable), len(resolvable))
    if spread >= 0.008:
        assert floor > SYNC_JOB_SLOWDOWN
    if spread >= 0.015:
        assert floor > 0.08 and len(resolvable) <= 0.1 * len(slow5)
        told = [f for f in floors if "below what these chips' spread lets sdc detect" in f.sentence(SYNC_JOB_SLOWDOWN)]
        assert len(told) >= 0.9 * len(floors)
