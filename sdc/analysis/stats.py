"""Vectorised statistics the analyses share: binomial tails, Benjamini–Hochberg, robust scale,
grouped medians and a one-sided CUSUM. Pure numpy/scipy over arrays."""

from __future__ import annotations

import numpy as np
from scipy import special


def binomial_sf(k: np.ndarray, n: np.ndarray, p: float | np.ndarray) -> np.ndarray:
    """P(X >= k) for X ~ Binomial(n, p), for real-valued (aged) k and n.

    Uses the regularised incomplete beta function, which extends the exact binomial tail
    to fractional counts: aged evidence weighs less than one full observation.
    """
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-300, 1.0)
    out = np.ones(np.broadcast(k, n, p).shape)
    has = (k > 0) & (n >= k)
    kk, nn = np.broadcast_to(k, out.shape)[has], np.broadcast_to(n, out.shape)[has]
    out[has] = special.betainc(kk, nn - kk + 1.0, np.broadcast_to(p, out.shape)[has])
    return out


def benjamini_hochberg(p: np.ndarray, q: float) -> np.ndarray:
    """Which hypotheses are rejected at false-discovery rate ``q`` (boolean mask)."""
    p = np.asarray(p, dtype=np.float64)
    m = p.size
    if m == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    below = ranked <= q * np.arange(1, m + 1) / m
    reject = np.zeros(m, dtype=bool)
    if below.any():
        last = int(np.nonzero(below)[0].max())
        reject[order[: last + 1]] = True
    return reject


def unique_sorted(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (np.unique's hash path is many times slower on large int arrays)."""
    s = np.sort(values)
    return s[np.r_[True, s[1:] != s[:-1]]] if s.size else s


def unique_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted distinct values, the index of each input in them, and their counts."""
    order = np.argsort(values, kind="stable")
    s = values[order]
    new = np.r_[True, s[1:] != s[:-1]] if s.size else np.zeros(0, bool)
    uniques = s[new]
    inverse = np.empty(values.size, dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    counts = np.diff(np.r_[np.flatnonzero(new), s.size])
    return uniques, inverse, counts


def group_sorted(groups: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort by (group, value); returns (order, group starts, group sizes)."""
    span = 2.0 * float(np.abs(values).max()) + 1.0 if values.size else 1.0
    if np.isfinite(span) and groups.size and float(groups.max()) * span < 2.0**32:
        # One sort on a composite key (group, value) keeps ~1e-6 resolution on the values,
        # plenty for medians and ranks, and costs half of two sorts.
        order = np.argsort(groups.astype(np.float64) * span + values)
    else:
        by_value = np.argsort(values)
        order = by_value[np.argsort(groups[by_value], kind="stable")]
    g = groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if g.size else np.zeros(0, dtype=np.int64)
    sizes = np.diff(np.r_[starts, g.size])
    return order, starts, sizes


def grouped_median(groups: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of ``values`` per group code (NaN for empty groups); ignores NaN values."""
    ok = ~np.isnan(values)
    groups, values = groups[ok], values[ok]
    out = np.full(n_groups, np.nan)
    if values.size == 0:
        return out
    order, starts, sizes = group_sorted(groups, values)
    v = values[order]
    lo = starts + (sizes - 1) // 2
    hi = starts + sizes // 2
    out[groups[order][starts]] = 0.5 * (v[lo] + v[hi])
    return out


def median_of_others(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each value, the median of the *other* values of its group (NaN when it is alone).

    Leaving the value itself out matters in small groups: on a node of two chips, a slow
    chip must be compared with the other chip, not with a median it drags halfway down.
    """
    out = np.full(values.size, np.nan)
    if values.size == 0:
        return out
    order, starts, sizes = group_sorted(groups, values)
    v = values[order]
    m = np.repeat(sizes, sizes)
    start = np.repeat(starts, sizes)
    p = np.arange(values.size) - start  # own position inside the sorted group
    lo, hi = (m - 2) // 2, (m - 1) // 2  # positions among the others
    lo_g, hi_g = lo + (lo >= p), hi + (hi >= p)  # the same positions in the whole group
    alone = m < 2
    lo_g, hi_g = np.where(alone, 0, lo_g), np.where(alone, 0, hi_g)
    med = 0.5 * (v[start + lo_g] + v[start + hi_g])
    out[order] = np.where(alone, np.nan, med)
    return out


def grouped_rank(groups: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mid-rank percentile (0..1) of each value inside its group, and the group size."""
    order, starts, sizes = group_sorted(groups, values)
    position = np.empty(values.size, dtype=np.float64)
    group_size = np.empty(values.size, dtype=np.float64)
    within = np.arange(values.size) - np.repeat(starts, sizes)
    position[order] = within + 0.5
    group_size[order] = np.repeat(sizes, sizes)
    return position / group_size, group_size


def robust_center_scale(values: np.ndarray, floor: float) -> tuple[float, float]:
    """Median and MAD-based standard deviation (floored), ignoring NaN."""
    v = values[~np.isnan(values)]
    if v.size == 0:
        return 0.0, floor
    center = float(np.median(v))
    scale = 1.4826 * float(np.median(np.abs(v - center)))
    return center, max(scale, floor)


def lower_cusum(series: np.ndarray, baseline: np.ndarray, slack: float) -> np.ndarray:
    """One-sided (downward) CUSUM per row of a chips × sweeps matrix; NaN entries are skipped.

    S_t = max(0, S_{t-1} + (baseline - x_t) - slack). Returns the final S per row: a
    sustained drop below the chip's own baseline makes it grow; noise keeps it near zero.
    """
    s = np.zeros(series.shape[0])
    for t in range(series.shape[1]):
        x = series[:, t]
        step = np.where(np.isnan(x), 0.0, baseline - x - slack)
        s = np.where(np.isnan(x), s, np.maximum(0.0, s + step))
    return s


def background_test(
    k: np.ndarray, n: np.ndarray, exclude: np.ndarray, floor: float, fdr: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Exact binomial test of each chip's (aged) count against the fleet rate, BH across chips.

    Each chip is tested against the pooled rate of the *other* chips (leave-one-out, so a chip
    cannot raise its own bar), leaving out the top 0.5% of chips by count and, on a second
    pass, the chips the first one flags, so a few bad chips do not raise it for the rest;
    never below ``floor``. Returns p-values, the
    flagged mask and the fleet rate.
    """
    tested = n > 0
    flagged = np.zeros(k.shape, dtype=bool)
    p_value = np.ones(k.shape)
    rate = floor
    # Chips in the top 0.5% by count (and with at least two events) stay out of the pool: a
    # handful of weakly faulty chips must not raise the bar for each other.
    base = tested & ~exclude
    top = float(np.quantile(k[base], 0.995)) if base.any() else 0.0
    trimmed = (k > top) if top >= 2 else (k >= 2)
    for _ in range(2):
        pool = base & ~trimmed & ~flagged
        big_k, big_n = float(k[pool].sum()), float(n[pool].sum())
        own_k, own_n = np.where(pool, k, 0.0), np.where(pool, n, 0.0)
        p0 = np.maximum(floor, (big_k - own_k) / np.maximum(big_n - own_n, 1e-12))
        p_value = binomial_sf(k, n, p0)
        flagged = np.zeros(k.shape, dtype=bool)
        flagged[tested] = benjamini_hochberg(p_value[tested], fdr)
        rate = max(floor, big_k / max(big_n, 1e-12))
    return p_value, flagged, rate
