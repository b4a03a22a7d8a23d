"""Slow chips: caught by size, rank and drift; a slow node, a throttle episode or a noisy
neighbour is not blamed on a chip."""

from dataclasses import replace

import numpy as np

from sdc.analysis.config import AnalysisConfig
from sdc.analysis.slow import find_slow

from .helpers import DAY, build, fleet

CFG = AnalysisConfig()
CASES = tuple("abcdefghij")


def noisy(seed=0, spread=0.015):
    rng = np.random.default_rng(seed)
    speed = {}

    def tp(r, factor=1.0):
        base = speed.setdefault(r.chip, rng.normal(0, spread))
        return replace(r, throughput=100.0 * factor * np.exp(base + 0.01 * rng.standard_t(3)))

    return tp


def hosts(n, per=8):
    return {f"c{i:02d}": f"node{i // per}" for i in range(n)}


def run(results, n, now):
    ev = build(results, hosts=hosts(n))
    return {ev.chip_ids[f.chip]: f for f in find_slow(ev, CFG, now)}


def test_chip_ten_percent_slow_is_found_with_high_severity():
    tp = noisy()
    results = [tp(r, 0.88 if r.chip == "c13" else 1.0) for r in fleet(64, sweeps=3, cases=CASES)]
    found = run(results, 64, 3 * DAY)
    assert set(found) == {"c13"}
    f = found["c13"]
    assert f.severity == "high" and 0.08 < f.score < 0.16 and f.p_value < 1e-3
    assert "slower than the median of its peers" in f.summary and "other chips of its node" in f.summary


def test_whole_node_slow_is_not_one_chips_fault():
    tp = noisy(1)
    results = [tp(r, 0.85 if r.chip in {f"c{i:02d}" for i in range(8, 16)} else 1.0) for r in fleet(64, sweeps=3, cases=CASES)]
    found = run(results, 64, 3 * DAY)
    # Reported against the node, on each of its chips, at a severity that changes no state.
    assert set(found) == {f"c{i:02d}" for i in range(8, 16)}
    assert all(f.severity == "low" and f.details["scope"] == "node" and f.details["host"] == "node1" for f in found.values())
    assert "node node1" in found["c08"].summary


def test_throttling_in_one_sweep_or_a_noisy_neighbour_is_not_slow():
    tp = noisy(2)
    rng = np.random.default_rng(3)

    def conditions(r):
        if r.chip == "c05" and r.sweep == 1:
            return tp(r, 0.85)  # one throttled sweep
        if r.chip == "c20" and rng.random() < 0.3:
            return tp(r, 0.6)  # a neighbour hogging the node now and then
        return tp(r)

    results = [conditions(r) for r in fleet(64, sweeps=3, cases=CASES)]
    assert run(results, 64, 3 * DAY) == {}


def test_gradual_degradation_is_caught_against_the_chips_own_past():
    tp = noisy(4)

    def degrade(r):
        return tp(r, 1.0 - max(0, r.sweep - 5) * 0.02) if r.chip == "c30" else tp(r)

    results = [degrade(r) for r in fleet(48, sweeps=10, cases=CASES)]
    found = run(results, 48, 10 * DAY)
    assert set(found) == {"c30"}
    assert found["c30"].details["drift_cusum"] > CFG.drift_alarm and "own earlier throughput" in found["c30"].summary


def test_one_sweep_is_never_enough_for_a_slow_quarantine():
    # A new card (or the fleet's first sweep) throttled 10 % in its only sweep: recorded, not acted on.
    tp = noisy(5)
    results = [tp(r, 0.90 if r.chip == "c13" else 1.0) for r in fleet(64, sweeps=1, cases=CASES)]
    found = run(results, 64, DAY)
    assert set(found) == {"c13"} and found["c13"].severity == "low"
    assert "only 1 of the 3 sweeps" in found["c13"].summary
    # The same slowness in each of three sweeps is the chip's: high.
    results = [tp(r, 0.90 if r.chip == "c13" else 1.0) for r in fleet(64, sweeps=3, cases=CASES)]
    assert run(results, 64, 3 * DAY)["c13"].severity == "high"


def test_five_percent_slow_is_found_and_chips_throttled_seven_percent_once_are_not():
    # The target: >= 95 % of 5 %-slow chips within 3 sweeps, over 20 fleets, and no
    # healthy chip throttled 7 % in one sweep acted on (a third of every fleet is). The
    # threshold follows the chip-to-chip spread measured on the fleet: 192 chips measure it
    # to within ~10 % (64 chips, to ~20 %, which now and then puts 5 % below the floor).
    caught = 0
    for seed in range(20):
        tp = noisy(100 + seed, spread=0.006)  # the simulator's chip-to-chip spread (sdc.sim.fleet)
        rng = np.random.default_rng(seed)
        throttled = {f"c{i:02d}": int(rng.integers(0, 3)) for i in range(0, 192, 3)}  # a third of the fleet

        def conditions(r):
            if r.chip == "c40":
                return tp(r, 0.95)
            if throttled.get(r.chip) == r.sweep:
                return tp(r, 0.93)
            return tp(r)

        found = run([conditions(r) for r in fleet(192, sweeps=3, cases=CASES)], 192, 3 * DAY)
        acted_on = {c: f.severity for c, f in found.items() if f.severity != "low"}
        assert set(acted_on) <= {"c40"}, seed
        caught += acted_on.get("c40") == "high"
    assert caught >= 19


def test_a_node_that_turned_slow_is_the_nodes_even_for_a_chip_throttled_before():
    # Node 1 slows 10 % from sweep 1 on; one of its chips was also throttled in sweep 0, so
    # its whole window is slow: still the node's, not a chip to quarantine.
    tp = noisy(6)
    node1 = {f"c{i:02d}" for i in range(8, 16)}

    def conditions(r):
        if r.chip in node1 and r.sweep >= 1:
            return tp(r, 0.90)
        if r.chip == "c09" and r.sweep == 0:
            return tp(r, 0.85)
        return tp(r)

    found = run([conditions(r) for r in fleet(64, sweeps=3, cases=CASES)], 64, 3 * DAY)
    assert set(found) == {"c09"}
    assert found["c09"].severity == "low" and found["c09"].details["scope"] == "node"
