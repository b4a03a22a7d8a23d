"""Slow chips: caught by size, rank and drift; a slow node, a throttle episode or a noisy
neighbour is not blamed on a chip."""

from dataclasses import replace

import numpy as np

from sdc.analysis.config import AnalysisConfig
from sdc.analysis.slow import find_slow

from .helpers import DAY, build, fleet

CFG = AnalysisConfig()
CASES = tuple("abcdefghij")


def noisy(seed=0, hosts_of=8):
    rng = np.random.default_rng(seed)
    speed = {}

    def tp(r, factor=1.0):
        base = speed.setdefault(r.chip, rng.normal(0, 0.015))
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
