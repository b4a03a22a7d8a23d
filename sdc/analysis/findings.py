"""``Finding``: what one analysis concluded about one chip, before it becomes a ``Verdict``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sdc.records import SEVERITY_RANK  # noqa: F401  (re-exported: the one severity order)


@dataclass
class Finding:
    """Evidence against one chip from one analysis (wrong, slow or inconsistent).

    ``rows`` index the Evidence results behind it; ``event_ids`` name job events.
    """

    chip: int
    kind: str
    severity: str
    k: int
    n: int
    summary: str
    statistic: float | None = None
    p_value: float | None = None
    score: float | None = None
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    event_ids: list[str] = field(default_factory=list)
    first_seen: float | None = None
    last_seen: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def window_counts(
    ev, rows: np.ndarray, hit: np.ndarray, window_sweeps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per chip: hits k and runs n over its last ``window_sweeps`` sweeps, and the mask of
    ``rows`` inside that window.

    A window in sweeps, not an age in days, so the test's power does not depend on the
    cadence: ten weekly sweeps weigh as much as ten daily ones.
    """
    chip = ev.chip[rows].astype(np.int64)
    n_sweeps = max(1, ev.sweep_ids.shape[0])
    pair = chip * n_sweeps + ev.sweep[rows]
    pairs = np.unique(pair)
    pair_chip = pairs // n_sweeps
    pair_time = ev.sweep_time[pairs % n_sweeps]
    order = np.lexsort((-pair_time, pair_chip))  # each chip's newest sweep first
    starts = np.flatnonzero(np.r_[True, pair_chip[order][1:] != pair_chip[order][:-1]]) if pairs.size else np.zeros(0, np.int64)
    rank = np.empty(pairs.size, dtype=np.int64)
    rank[order] = np.arange(pairs.size) - np.repeat(starts, np.diff(np.r_[starts, pairs.size]))
    inside = rank[np.searchsorted(pairs, pair)] < window_sweeps
    k = np.bincount(chip[inside], weights=hit[inside].astype(float), minlength=ev.n_chips)
    n = np.bincount(chip[inside], minlength=ev.n_chips).astype(float)
    return k, n, inside


def first_last(chip: np.ndarray, times: np.ndarray, n_chips: int) -> tuple[np.ndarray, np.ndarray]:
    first = np.full(n_chips, np.inf)
    last = np.full(n_chips, -np.inf)
    np.minimum.at(first, chip, times)
    np.maximum.at(last, chip, times)
    return first, last


def rows_by_chip(chip_of_row: np.ndarray, rows: np.ndarray, wanted: np.ndarray) -> dict[int, np.ndarray]:
    """``rows`` grouped by chip, for the chips in ``wanted`` only (one sort, not one scan each)."""
    keep = np.isin(chip_of_row, wanted)
    chips, rows = chip_of_row[keep], rows[keep]
    order = np.argsort(chips, kind="stable")
    chips, rows = chips[order], rows[order]
    bounds = np.flatnonzero(np.r_[True, chips[1:] != chips[:-1], True]) if chips.size else np.zeros(1, np.int64)
    return {int(chips[a]): rows[a:b] for a, b in zip(bounds[:-1], bounds[1:])}
