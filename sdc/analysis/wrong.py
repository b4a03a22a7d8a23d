"""Wrong chips: outputs that disagree with the cohort majority or break the fp64 error bound.

Inside a cohort (same probe, version, case, seed, chip model, software stack) a deterministic
kernel gives bit-identical digests on every healthy chip, so the digest most chips agree on
is the answer and a chip with another digest is wrong — even if its own repeats agree. Per
chip, wrong results are counted over its last evidence_window_sweeps complete sweeps and tested against the
fleet's background rate with an exact binomial tail, Benjamini–Hochberg across chips. A wrong
result that the chip's own repeats reproduce is strong evidence on its own: it is not a
transient upset but a broken unit.
"""

from __future__ import annotations

import numpy as np

from sdc.analysis.config import AnalysisConfig
from sdc.analysis.evidence import MISMATCH, NO_DIGEST, Evidence
from sdc.analysis.findings import Finding, first_last, rows_by_chip, window_counts
from sdc.analysis.stats import background_test, unique_inverse, unique_sorted


def cohort_majority(ev: Evidence, rows: np.ndarray, min_chips: int) -> tuple[np.ndarray, np.ndarray]:
    """Per result in ``rows``: the cohort's majority digest and whether it is usable.

    Votes are by chip, not by result, so a chip seen in many sweeps does not outvote the
    fleet. A majority is usable when it holds more than half of the cohort's chips and at
    least ``min_chips`` chips other than the one being judged.
    """
    cohort = ev.cohort[rows].astype(np.int64)
    digest = ev.digest[rows].astype(np.int64)
    chip = ev.chip[rows].astype(np.int64)
    n_digest = int(digest.max()) + 2 if digest.size else 1
    n_chip = int(chip.max()) + 1 if chip.size else 1
    has = digest != NO_DIGEST
    # One vote per (cohort, digest, chip).
    votes = unique_sorted((cohort[has] * n_digest + (digest[has] + 1)) * n_chip + chip[has])
    pair = votes // n_chip
    pairs, _, support = unique_inverse(pair)
    pair_cohort = pairs // n_digest
    pair_digest = pairs % n_digest - 1
    n_cohorts = int(cohort.max()) + 1 if cohort.size else 0
    cohort_chips = np.bincount(unique_sorted(votes // n_chip // n_digest * n_chip + votes % n_chip) // n_chip, minlength=n_cohorts)
    # Highest support per cohort (ties: no majority, since neither exceeds half).
    order = np.lexsort((support, pair_cohort))
    last = np.r_[pair_cohort[order][1:] != pair_cohort[order][:-1], True]
    best = order[last]
    majority = np.full(n_cohorts, NO_DIGEST, dtype=np.int64)
    majority_support = np.zeros(n_cohorts, dtype=np.int64)
    majority[pair_cohort[best]] = pair_digest[best]
    majority_support[pair_cohort[best]] = support[best]
    usable_cohort = 2 * majority_support > cohort_chips
    result_majority = majority[cohort]
    agrees = digest == result_majority
    others = majority_support[cohort] - agrees.astype(np.int64)
    usable = usable_cohort[cohort] & (others >= min_chips)
    return result_majority, usable


def find_wrong(ev: Evidence, cfg: AnalysisConfig, now: float) -> list[Finding]:
    """Findings for chips whose outputs are wrong more often than the fleet's background."""
    rows = np.flatnonzero(ev.evidence_mask())
    if rows.size == 0:
        return []
    majority, usable = cohort_majority(ev, rows, cfg.majority_min_chips)
    digest = ev.digest[rows]
    has_digest = digest != NO_DIGEST
    minority = usable & has_digest & (digest != majority)
    # An fp64-bound mismatch whose repeats agree (distinct == 1) is a wrong answer; one the
    # cohort majority shares is the probe's bound, not the chip.
    bound = (ev.status[rows] == MISMATCH) & (ev.distinct[rows] <= 1) & ~(usable & (digest == majority))
    wrong = minority | bound
    # Critical needs the same wrong answer from two runs in separate processes: the sweep's
    # retest in a fresh worker, or the same case in another sweep. A wrong answer seen once
    # (a library's fallback kernel, one upset) is only evidence for the binomial test.
    confirmed = wrong & (ev.distinct[rows] == 1) & _reproduced(ev, rows, wrong)

    n_chips = ev.n_chips
    chip = ev.chip[rows]
    times = ev.sweep_time[ev.sweep[rows]]
    k, n, _inside = window_counts(ev, rows, wrong, cfg.evidence_window_sweeps)
    k_raw, n_raw = k, n
    strong = np.bincount(chip[confirmed], minlength=n_chips) > 0

    p_value, flagged, p0 = background_test(k, n, strong, cfg.wrong_background_floor, cfg.fdr)
    flagged &= k >= 2  # one wrong result no fresh run reproduced is evidence, never a verdict alone
    first, last = first_last(chip[wrong], times[wrong], n_chips) if wrong.any() else (None, None)
    findings = []
    chosen = np.flatnonzero(flagged | strong)
    by_chip = rows_by_chip(chip[wrong], rows[wrong], chosen)
    n_confirmed_all = np.bincount(chip[confirmed], minlength=n_chips)
    n_minority = np.bincount(chip[minority], minlength=n_chips)
    n_bound = np.bincount(chip[bound], minlength=n_chips)
    for c in chosen:
        chip_rows = by_chip.get(int(c), np.zeros(0, np.int64))
        n_confirmed = int(n_confirmed_all[c])
        severity = "critical" if strong[c] else "high"
        units = sorted({ev.cohort_labels[i] for i in unique_sorted(ev.cohort[chip_rows])})
        how = (
            f"{n_confirmed} wrong result(s) reproduced by its repeats and again in a separate run"
            if strong[c]
            else f"{int(k_raw[c])} of {int(n_raw[c])} results wrong against a fleet background of {p0:.2g}"
        )
        findings.append(
            Finding(
                chip=int(c),
                kind="wrong",
                severity=severity,
                k=int(k_raw[c]),
                n=int(n_raw[c]),
                summary=f"computes wrong results: {how}, on {_units_text(units)}",
                statistic=float(k[c]),
                p_value=float(p_value[c]),
                rows=chip_rows,
                first_seen=float(first[c]),
                last_seen=float(last[c]),
                details={
                    "units": units,
                    "confirmed_by_repeats": n_confirmed,
                    "against_majority": int(n_minority[c]),
                    "against_fp64": int(n_bound[c]),
                    "background_rate": p0,
                    "window_sweeps": cfg.evidence_window_sweeps,
                },
            )
        )
    return findings



def _reproduced(ev: Evidence, rows: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """Per row: whether the chip gave this same wrong digest in another result of the cohort."""
    out = np.zeros(rows.size, dtype=bool)
    w = rows[wrong]
    if w.size == 0:
        return out
    n_digest = int(ev.digest.max()) + 2
    key = (ev.cohort[w].astype(np.int64) * n_digest + ev.digest[w] + 1) * ev.n_chips + ev.chip[w]
    _, inverse, counts = unique_inverse(key)
    out[np.flatnonzero(wrong)] = counts[inverse] >= 2
    return out


def _units_text(units: list[str], limit: int = 4) -> str:
    shown = ", ".join(units[:limit])
    return shown + (f" and {len(units) - limit} more" if len(units) > limit else "")
