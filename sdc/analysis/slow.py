"""Slow chips: throughput well below peers running the same case, or sinking below the chip's own past.

Per cohort (probe, version, case, chip model, stack) the centre is the median log throughput
and the spread its MAD, floored at a few per cent so a tight cohort does not turn noise into
alarms. Over the chip's most recent sweeps its effect is its *least* slow sweep (the median
deviation of that sweep's results): a slow chip is slow every time, a healthy chip throttled
in one sweep is not. A chip is slow when all of these hold:

- the effect is at least the practical threshold slower than the cohort median:
  ``max(slow_min_effect, slow_spread_k x the spread)``, where the spread is the chip model's
  measured chip-to-chip spread of the effect (MAD across chips, so the few slow chips do not
  widen it, at its upper 2-standard-error bound); a fleet whose chips differ more needs a
  bigger slowdown, and a ``SlowFloor`` per chip model says which slowdown the spread lets the
  test find;
- its robust z-score among chips of its model is significant (BH across chips);
- a one-sided stratified Mann–Whitney rank test against its peers agrees (BH across chips).

High (quarantine) needs the whole window of ``slow_window_sweeps`` sweeps and an effect of
``slow_high_effect``; a chip with fewer sweeps (a new card, the fleet's first sweep) is
recorded at low severity only. The node: in every window sweep the chip must also be slower
than the other chips of its model on its host by ``max(node_gap, slow_spread_k x the spread of
that gap)``; chips slow together with their node are the node's problem (power, cooling, PCIe),
reported as a low, node-scoped finding on each of them and never a chip quarantine. A one-sided
CUSUM of the chip's per-sweep throughput against its own earlier baseline catches gradual
degradation (medium), unless the whole node sank with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from sdc.analysis.config import AnalysisConfig
from sdc.analysis.evidence import Evidence
from sdc.analysis.findings import Finding, first_last, rows_by_chip
from sdc.analysis.stats import (
    benjamini_hochberg,
    median_of_others,
    grouped_median,
    grouped_rank,
    lower_cusum,
    unique_inverse,
)


# A chip slower than the threshold by this many spreads is found in 19 of 20 windows (one-sided
# normal 95 %): what makes the threshold a detectable slowdown.
POWER_Z = 1.645
# The slowdown worth finding: one chip 5 % slow slows a synchronous job of any size by 5 %.
# Operators are told when their chips' spread puts it out of reach.
SYNC_JOB_SLOWDOWN = 0.05
# Chips with a full window that a model needs for its spread to be measured on them alone;
# with fewer, every chip of the model with a window sweep counts.
SPREAD_MIN_CHIPS = 20


@dataclass(frozen=True)
class SlowFloor:
    """What the slow test can resolve among the chips of one model.

    ``spread``: the chips' persistent chip-to-chip spread of their window effect (log units, ~
    a share), ``node_spread`` that of their gap to their node mates; ``threshold`` and
    ``node_threshold``: the least slowdown (share) called slow, and the least gap to the chip's
    node; ``detectable``: the slowdown found in 95 % of chips (a smaller one hides in the
    healthy spread).
    """

    model: str
    chips: int
    spread: float
    node_spread: float
    threshold: float
    node_threshold: float
    detectable: float

    def to_json_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def sentence(self, target: float) -> str:
        """One line for an operator; says so when ``target`` (share) is below what the fleet resolves."""
        text = (f"slow test, {self.model}: chips differ by {self.spread:.1%} (spread over {self.chips:,} chips); "
                f"called slow from {self.threshold:.1%}, found reliably from {self.detectable:.1%} slower than peers")
        if self.detectable > target:
            text += f"; a {target:.0%} slowdown is below what these chips' spread lets sdc detect"
        return text


def find_slow(ev: Evidence, cfg: AnalysisConfig, now: float) -> list[Finding]:
    return slow_analysis(ev, cfg, now)[0]


def slow_analysis(ev: Evidence, cfg: AnalysisConfig, now: float) -> tuple[list[Finding], list[SlowFloor]]:
    """Slow findings, and per chip model the floor its chip-to-chip spread sets."""
    rows = np.flatnonzero(ev.evidence_mask() & (ev.throughput > 0))
    if rows.size == 0:
        return [], []
    n_chips = ev.n_chips
    x = np.log(ev.throughput[rows])
    cohort = ev.slow_cohort[rows]
    n_cohorts = int(cohort.max()) + 1
    centre = grouped_median(cohort, x, n_cohorts)
    dev = x - centre[cohort]
    # Cohort spread: MAD, floored at mad_floor (log units ~ share of the median) so a very
    # tight cohort does not turn a 1% wobble into a many-sigma event.
    spread = np.maximum(1.4826 * grouped_median(cohort, np.abs(dev), n_cohorts), cfg.mad_floor)
    z_row = dev / spread[cohort]
    chip = ev.chip[rows]

    # Per chip and sweep: the median deviation, placed in a chips × sweeps matrix (time order).
    pair_key = chip.astype(np.int64) * ev.sweep_ids.shape[0] + ev.sweep[rows]
    pairs, pair_of_row, _ = unique_inverse(pair_key)
    pair_chip = (pairs // ev.sweep_ids.shape[0]).astype(np.int64)
    pair_time = ev.sweep_time[pairs % ev.sweep_ids.shape[0]]
    pair_dev = grouped_median(pair_of_row, dev, pairs.size)
    pair_z = grouped_median(pair_of_row, z_row, pairs.size)
    order = np.lexsort((pair_time, pair_chip))
    counts = np.bincount(pair_chip, minlength=n_chips)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    slot = np.empty(pairs.size, dtype=np.int64)
    slot[order] = np.arange(pairs.size) - np.repeat(starts, counts)
    width = int(counts.max())
    series = np.full((n_chips, width), np.nan)
    series[pair_chip, slot] = pair_dev

    # The recent window: each chip's last slow_window_sweeps sweeps.
    from_end = counts[pair_chip] - slot  # 1 = the chip's latest sweep
    in_window = (from_end <= cfg.slow_window_sweeps)[pair_of_row]
    w_rows, w_chip, w_dev = rows[in_window], chip[in_window], dev[in_window]
    # The effect is the chip's *least* slow sweep in the window (log ratio to the cohort
    # median): a slow chip is slow every time, a healthy chip that throttled in one or two
    # sweeps is not, and neither is one hit by a noisy neighbour now and then.
    w_pairs = np.flatnonzero(from_end <= cfg.slow_window_sweeps)
    effect = np.full(n_chips, -np.inf)
    np.maximum.at(effect, pair_chip[w_pairs], pair_dev[w_pairs])
    effect[~np.isfinite(effect)] = np.nan
    median_effect = grouped_median(w_chip, w_dev, n_chips)
    n_window = np.bincount(w_chip, minlength=n_chips)
    tested = n_window > 0

    # Robust z of the chip among chips of its model, on its least slow window sweep's median
    # per-result z (each result scaled by its cohort's spread).
    effect_z = np.full(n_chips, -np.inf)
    np.maximum.at(effect_z, pair_chip[w_pairs], pair_z[w_pairs])
    z = np.full(n_chips, np.nan)
    for model in np.unique(ev.chip_model[tested]):
        members = tested & (ev.chip_model == model)
        e = effect_z[members]
        c = np.median(e)
        s = max(1.4826 * np.median(np.abs(e - c)), cfg.chip_scale_floor)
        z[members] = (e - c) / s
    p_z = np.where(tested, sps.norm.cdf(np.nan_to_num(z, nan=0.0)), 1.0)

    # Stratified Mann–Whitney: mid-rank percentile of each window result inside its cohort.
    u, _ = grouped_rank(ev.slow_cohort[w_rows].astype(np.int64), w_dev)
    mean_u = np.bincount(w_chip, weights=u, minlength=n_chips) / np.maximum(n_window, 1)
    z_mw = (mean_u - 0.5) / np.sqrt(1.0 / (12.0 * np.maximum(n_window, 1)))
    p_mw = np.where(tested, sps.norm.cdf(z_mw), 1.0)

    sig_z = np.zeros(n_chips, bool)
    sig_mw = np.zeros(n_chips, bool)
    sig_z[tested] = benjamini_hochberg(p_z[tested], cfg.fdr)
    sig_mw[tested] = benjamini_hochberg(p_mw[tested], cfg.fdr)

    # High needs the whole window: one sweep (a new card, the fleet's first) is not enough.
    window_sweeps = np.bincount(pair_chip[w_pairs], minlength=n_chips)
    full = window_sweeps >= cfg.slow_window_sweeps

    # The node: per sweep, each chip against the median of the other chips of its model on
    # its host (inf: no other chip to compare with); the gap is its smallest over the window.
    n_sweeps = ev.sweep_ids.shape[0]
    n_models = int(ev.chip_model.max()) + 1 if ev.n_chips else 1
    node_of_pair = (ev.chip_host[pair_chip].astype(np.int64) * n_models + ev.chip_model[pair_chip]) * n_sweeps + pairs % n_sweeps
    others = median_of_others(node_of_pair, pair_dev)
    pair_gap = np.where(np.isfinite(others), others - pair_dev, np.inf)
    gap = np.full(n_chips, np.inf)
    np.minimum.at(gap, pair_chip[w_pairs], pair_gap[w_pairs])

    # Nodes slow as a whole in the chip's latest sweep (most of its chips, at least two), and
    # how many chips of the model each node had then.
    node_members = np.zeros(n_chips)
    node_slow = np.zeros(n_chips, dtype=bool)
    node_median = np.zeros(n_chips)
    latest = np.flatnonzero(from_end == 1)
    together, members = _slow_together(node_of_pair[latest], pair_dev[latest] <= np.log1p(-cfg.slow_min_effect))
    node_slow[pair_chip[latest]] = together
    node_members[pair_chip[latest]] = members
    node_median[pair_chip[latest]] = np.nan_to_num(others[latest], nan=0.0)

    # Practical thresholds from each model's measured chip-to-chip spread (log units).
    floors, effect_thr, gap_thr = _floors(ev, cfg, effect, gap, tested, full & ~node_slow, node_members)
    slowdown = 1.0 - np.exp(np.nan_to_num(effect, nan=0.0))  # 0.1 = 10% slower than peers
    slow = tested & (np.nan_to_num(effect, nan=0.0) <= -effect_thr) & sig_z & sig_mw

    # Drift: CUSUM of per-sweep deviation below the chip's baseline before the window.
    history = counts - cfg.slow_window_sweeps
    can_drift = history >= cfg.drift_min_history
    baseline = np.full(n_chips, np.nan)
    if can_drift.any():
        early = np.where(np.arange(width)[None, :] < history[:, None], series, np.nan)
        baseline[can_drift] = np.nanmedian(early[can_drift], axis=1)
    cusum = np.zeros(n_chips)
    if can_drift.any():
        cusum[can_drift] = lower_cusum(series[can_drift], baseline[can_drift], cfg.drift_slack)
    # Like the slow test, the least slow sweep of the window: two throttled sweeps are not a drift.
    drop = 1.0 - np.exp(np.nan_to_num(effect - baseline, nan=0.0))
    drifting = can_drift & (cusum > cfg.drift_alarm) & (drop >= cfg.slow_min_effect)

    # A chip is its own problem only when it is the node threshold slower than the other chips
    # of its node in every window sweep; chips slow together with their node are the node's
    # (power, cooling, PCIe).
    own = slow & (gap >= gap_thr)
    gap = np.where(np.isfinite(gap), gap, 0.0)
    drift_any = drifting.copy()
    drifting &= ~node_slow  # a node sinking as a whole is the node's, as above
    chosen = np.flatnonzero(own | drifting)
    slow_rows = w_dev < np.log1p(-cfg.slow_min_effect)
    held = ((slow & ~own) | (node_slow & drift_any)) & node_slow  # the node's, not the chip's
    by_chip = rows_by_chip(w_chip[slow_rows], w_rows[slow_rows], np.flatnonzero(held | own | drifting))
    first, last = first_last(w_chip, ev.sweep_time[ev.sweep[w_rows]], n_chips)
    findings = []
    for c in chosen:
        high = own[c] and full[c] and slowdown[c] >= cfg.slow_high_effect
        floor = floors[int(ev.chip_model[c])]
        why = []
        if own[c]:
            why.append(f"at least {slowdown[c]:.1%} slower than the median of its peers in each of its last {int(window_sweeps[c])} sweep(s)")
            if not full[c]:
                why.append(f"only {int(window_sweeps[c])} of the {cfg.slow_window_sweeps} sweeps it takes to act on it")
        if drifting[c]:
            why.append(f"{drop[c]:.1%} below its own earlier throughput (CUSUM {cusum[c]:.3f})")
        if node_members[c] >= 2:
            why.append(f"at least {1 - np.exp(-gap[c]):.1%} slower than the other chips of its node in each sweep")
        if own[c]:
            why.append(f"{floor.model} chips differ by {floor.spread:.1%}: slow from {floor.threshold:.1%}, "
                       f"found reliably from {floor.detectable:.1%}")
        chip_rows = by_chip.get(int(c), np.zeros(0, np.int64))
        findings.append(
            Finding(
                chip=int(c),
                kind="slow",
                # A partial window (a new chip) is recorded only; drift alone makes a suspect.
                severity="high" if high else ("medium" if (full[c] or drifting[c]) else "low"),
                k=int(chip_rows.size),
                n=int(n_window[c]),
                summary="runs slow: " + "; ".join(why),
                statistic=float(z[c]),
                p_value=float(max(p_z[c], p_mw[c])) if slow[c] else None,
                score=float(slowdown[c]),
                rows=chip_rows,
                first_seen=float(first[c]),
                last_seen=float(last[c]),
                details={
                    "slowdown": float(slowdown[c]),
                    "median_slowdown": float(1 - np.exp(median_effect[c])),
                    "robust_z": float(z[c]),
                    "mann_whitney_z": float(z_mw[c]),
                    "node_gap": float(1 - np.exp(-gap[c])) if node_members[c] >= 2 else None,
                    "drift_cusum": float(cusum[c]),
                    "drift_drop": float(drop[c]) if can_drift[c] else None,
                    "window_sweeps": int(window_sweeps[c]),
                    "chip_spread": floor.spread,
                    "slow_threshold": floor.threshold,
                    "node_threshold": floor.node_threshold,
                    "detectable_slowdown": floor.detectable,
                },
            )
        )
    findings += _node_findings(ev, held, node_median, slowdown, first, last, by_chip)
    return findings, [floors[m] for m in sorted(floors)]


def _floors(ev: Evidence, cfg: AnalysisConfig, effect, gap, tested, measurable, node_members) -> tuple[dict[int, SlowFloor], np.ndarray, np.ndarray]:
    """Per chip model its ``SlowFloor``; per chip the effect and node-gap thresholds (log units).

    The spread is 1.4826 x the MAD across the model's chips of their window effect, around its
    median, the healthy centre: the median ignores the few slow chips and slow nodes, and the
    effect already holds what makes healthy chips differ from window to window (timing noise,
    throttles the least-slow sweep did not hide), so the threshold is set on the very
    statistic it is applied to. The gap to the node is the chip's offset less the median of
    its m node mates', so its spread is the spread x sqrt(1 + pi / 2m) (the variance of a
    median of m): derived, not measured, since gaps of a node's chips share their mates'
    median and a fleet of a dozen nodes would measure their spread roughly. A chip is slow at
    ``slow_spread_k`` spreads beyond that centre (the least slow of a few sweeps sits a little
    above the cohort median), and never nearer the cohort median than ``slow_min_effect``.
    Measured on chips with a full window, off nodes slow as a whole (their slowness is the
    node's, not silicon spread), where a model has enough of them.
    """
    min_effect, min_gap = -np.log1p(-cfg.slow_min_effect), -np.log1p(-cfg.node_gap)
    effect_thr = np.full(ev.n_chips, min_effect)
    gap_thr = np.full(ev.n_chips, min_gap)
    floors: dict[int, SlowFloor] = {}
    labels = list(ev.model_labels)
    k = cfg.slow_spread_k
    for model in np.unique(ev.chip_model[tested]):
        of_model = tested & (ev.chip_model == model)
        measured = of_model & measurable if (of_model & measurable).sum() >= SPREAD_MIN_CHIPS else of_model
        centre, spread = _centre_spread(effect[measured])
        node_centre = _centre_spread(gap[measured & np.isfinite(gap)])[0]
        mates = node_members[measured & (node_members >= 2)] - 1
        node_spread = spread * float(np.sqrt(1 + np.pi / (2 * np.median(mates)))) if mates.size else spread
        # The thresholds use the spread's upper 2-standard-error bound: a MAD of n chips is off
        # by 1.17/sqrt(n) of itself (one sd), and a model of 70 chips measuring a 1.5 % spread
        # as 1.0 % would otherwise call its healthy 3-sigma chips slow.
        margin = 1 + 2 * 1.166 / np.sqrt(max(int(measured.sum()), 1))
        e_thr = max(min_effect, k * spread * margin - centre)
        g_thr = max(min_gap, node_centre + k * node_spread * margin)
        effect_thr[of_model], gap_thr[of_model] = e_thr, g_thr
        # A chip d slower than it would be sits d below the healthy centre, give or take a
        # spread: found in 95 % past the effect threshold and, on a node with other chips, the gap's.
        found = max(e_thr + centre + POWER_Z * spread, g_thr - node_centre + POWER_Z * node_spread)
        name = str(labels[model]) if model < len(labels) else f"model {int(model)}"
        floors[int(model)] = SlowFloor(
            model=name, chips=int(measured.sum()), spread=spread, node_spread=node_spread,
            threshold=float(-np.expm1(-e_thr)), node_threshold=float(-np.expm1(-g_thr)), detectable=float(-np.expm1(-found)),
        )
    return floors, effect_thr, gap_thr


def _centre_spread(values: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826 x MAD (the normal standard deviation, untouched by a few outliers); 0, 0 for no data."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 0.0
    centre = float(np.median(values))
    return centre, float(1.4826 * np.median(np.abs(values - centre)))


def _slow_together(node_sweep: np.ndarray, slow_now: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per chip (one entry each, its latest sweep): whether most chips of its node in that
    sweep (at least two) were slow, and how many chips the node had in it."""
    _, inverse, counts = unique_inverse(node_sweep)
    n_slow = np.bincount(inverse, weights=slow_now.astype(float), minlength=counts.size)
    together = (n_slow >= 2) & (2 * n_slow > counts)
    return together[inverse], counts[inverse].astype(float)


def _node_findings(ev, held, node_median, slowdown, first, last, by_chip) -> list[Finding]:
    """A low, node-scoped finding for each slow chip of a node that is slow as a whole."""
    findings = []
    for c in np.flatnonzero(held):
        host = ev.host_labels[ev.chip_host[c]] if ev.host_labels else str(int(ev.chip_host[c]))
        node_slowdown = float(1 - np.exp(node_median[c]))
        findings.append(
            Finding(
                chip=int(c), kind="slow", severity="low", k=int(by_chip.get(int(c), ()).__len__()), n=int(by_chip.get(int(c), ()).__len__()),
                rows=by_chip.get(int(c), np.zeros(0, np.int64)),
                summary=(f"is on node {host}, whose chips run slow together ({node_slowdown:.1%} below their peers): "
                         "a node problem (power, cooling, PCIe), not this chip's; no chip is quarantined for it"),
                score=float(slowdown[c]), first_seen=float(first[c]), last_seen=float(last[c]),
                details={"scope": "node", "host": host, "node_slowdown": node_slowdown, "slowdown": float(slowdown[c])},
            )
        )
    return findings
