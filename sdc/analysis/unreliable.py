"""Unreliable chips: cases that error or time out on this chip far more often than on its cohort.

An error is never a wrong answer, but a chip that hangs or crashes in every sweep is not
healthy either, and until now it was never flagged. Per chip, over its last
``evidence_window_sweeps`` sweeps, its errors and timeouts are counted against what its
cohorts (same probe, case, chip model and stack) show on the *other* chips: a case that fails
everywhere (a driver bug, a missing kernel) raises the expectation and blames nobody. The
count is tested with an exact binomial tail, Benjamini–Hochberg across chips. A verdict
needs ``unreliable_min_failures`` failures; it is high when they recur in two or more sweeps.
"""

from __future__ import annotations

import numpy as np

from sdc.analysis.config import AnalysisConfig
from sdc.analysis.evidence import STATUS_CODES, Evidence
from sdc.analysis.findings import Finding, first_last, rows_by_chip, window_counts
from sdc.analysis.stats import benjamini_hochberg, binomial_sf, unique_inverse, unique_sorted

ERROR, TIMEOUT = STATUS_CODES["error"], STATUS_CODES["timeout"]


def find_unreliable(ev: Evidence, cfg: AnalysisConfig, now: float) -> list[Finding]:
    """Findings for chips whose cases error or time out more often than their cohorts'."""
    rows = np.flatnonzero(ev.status <= TIMEOUT)  # skipped cases say nothing about the chip
    if rows.size == 0:
        return []
    failed_all = (ev.status[rows] == ERROR) | (ev.status[rows] == TIMEOUT)
    k, n, inside = window_counts(ev, rows, failed_all, cfg.evidence_window_sweeps)
    rows, failed = rows[inside], failed_all[inside]
    chip = ev.chip[rows].astype(np.int64)
    n_chips = ev.n_chips
    expected = _expected_failures(chip, ev.slow_cohort[rows].astype(np.int64), failed, n_chips)
    tested = n > 0
    p0 = np.maximum(cfg.unreliable_background_floor, expected / np.maximum(n, 1))
    p_value = np.where(tested, binomial_sf(k, n, np.minimum(p0, 1.0)), 1.0)
    flagged = np.zeros(n_chips, dtype=bool)
    flagged[tested] = benjamini_hochberg(p_value[tested], cfg.fdr)
    flagged &= k >= cfg.unreliable_min_failures
    sweeps_failed = np.bincount(unique_sorted(chip[failed] * ev.sweep_ids.shape[0] + ev.sweep[rows][failed]) // ev.sweep_ids.shape[0],
                                minlength=n_chips) if failed.any() else np.zeros(n_chips, np.int64)
    chosen = np.flatnonzero(flagged)
    by_chip = rows_by_chip(chip[failed], rows[failed], chosen)
    times = ev.sweep_time[ev.sweep[rows]]
    first, last = first_last(chip[failed], times[failed], n_chips) if failed.any() else (None, None)
    n_timeouts = np.bincount(chip[ev.status[rows] == TIMEOUT], minlength=n_chips)
    findings = []
    for c in chosen:
        recurring = sweeps_failed[c] >= 2
        findings.append(
            Finding(
                chip=int(c),
                kind="unreliable",
                severity="high" if recurring else "medium",
                k=int(k[c]),
                n=int(n[c]),
                summary=(f"fails to run its cases: {int(k[c])} of {int(n[c])} errored or timed out "
                         f"({int(n_timeouts[c])} timeouts) in {int(sweeps_failed[c])} sweep(s), where its cohorts "
                         f"expect {expected[c]:.1f}; an error is never counted as a wrong answer"),
                statistic=float(k[c]),
                p_value=float(p_value[c]),
                rows=by_chip.get(int(c), np.zeros(0, np.int64)),
                first_seen=float(first[c]),
                last_seen=float(last[c]),
                details={"failures": int(k[c]), "timeouts": int(n_timeouts[c]), "expected": float(expected[c]),
                         "sweeps_with_failures": int(sweeps_failed[c]), "window_sweeps": cfg.evidence_window_sweeps},
            )
        )
    return findings


def _expected_failures(chip: np.ndarray, cohort: np.ndarray, failed: np.ndarray, n_chips: int) -> np.ndarray:
    """Per chip: the failures its results would have at the other chips' rate in each cohort."""
    n_cohorts = int(cohort.max()) + 1
    pairs, pair_of_row, pair_n = unique_inverse(cohort * n_chips + chip)
    pair_f = np.bincount(pair_of_row, weights=failed.astype(float), minlength=pairs.size)
    pair_cohort = pairs // n_chips
    cohort_n = np.bincount(pair_cohort, weights=pair_n.astype(float), minlength=n_cohorts)
    cohort_f = np.bincount(pair_cohort, weights=pair_f, minlength=n_cohorts)
    others_n = cohort_n[pair_cohort] - pair_n
    rate = np.where(others_n > 0, (cohort_f[pair_cohort] - pair_f) / np.maximum(others_n, 1), 0.0)
    return np.bincount(pairs % n_chips, weights=pair_n * rate, minlength=n_chips)
