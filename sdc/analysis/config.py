"""Thresholds of the analysis: its keys of the ``[analysis]`` table of the config file.

Every key is optional; the defaults below are the documented ones (README, "Analysis and
quarantine"). Unknown keys and wrong types are refused with a message naming the key; the
quarantine policy's keys of the same table (``sdc.quarantine.config``) are passed as ``others``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from sdc.config import ConfigError


@dataclass(frozen=True)
class AnalysisConfig:
    # False-discovery rate across chips (Benjamini–Hochberg), per kind of test.
    fdr: float = 0.001
    # Fleet background rates are estimated from the data but never taken below these floors.
    wrong_background_floor: float = 1e-6
    nondeterminism_background_floor: float = 1e-6
    # A cohort majority needs at least this many chips agreeing (besides the chip judged).
    majority_min_chips: int = 2
    # A cohort where more than this share of chips shows repeat disagreement runs a kernel
    # that is not deterministic there: its repeats are not evidence against any chip.
    nondeterministic_cohort_share: float = 0.5
    # Wrong and nondeterministic results are counted over each chip's last
    # evidence_window_sweeps complete sweeps (whatever the cadence); older than max_age_days
    # is not loaded. half_life_days is accepted for old config files and no longer used:
    # ageing by days cut ten weekly sweeps to a fraction and lost intermittent faults.
    evidence_window_sweeps: int = 30
    half_life_days: float = 30.0
    max_age_days: float = 90.0
    # Slow: per-result spread floor (share of the median), recent window, effect thresholds.
    mad_floor: float = 0.02
    slow_window_sweeps: int = 3
    slow_min_effect: float = 0.03
    slow_high_effect: float = 0.03
    node_gap: float = 0.03
    # The effect and node-gap thresholds are never below this many of the chip model's
    # measured chip-to-chip spreads (MAD across its chips, taken at its upper 2-standard-error
    # bound, so a model of few chips that measures its spread low by chance is covered), so
    # healthy tails stay healthy whatever the fleet's silicon and power spread. A healthy
    # chip's window effect is mostly its persistent offset, so the false-quarantine target
    # (<= 1 per 10,000 healthy chips per 30 sweeps) is a per-chip tail of 1e-4: 3.7 spreads
    # for a normal spread. 4 (P = 3.2e-5) leaves a factor 3 for tails heavier than normal; the
    # z and rank tests still stand behind it.
    slow_spread_k: float = 4.0
    # Floor of the spread of chips' robust z-scores among chips of a model (z units).
    chip_scale_floor: float = 0.25
    # Drift (CUSUM on the chip's own per-sweep throughput): slack and alarm level (log units).
    drift_slack: float = 0.015
    drift_alarm: float = 0.08
    drift_min_history: int = 4
    # Unreliable: errors and timeouts against the cohort's rate (never below the floor), and
    # the least failures that make a verdict.
    unreliable_background_floor: float = 1e-3
    unreliable_min_failures: int = 3
    # Inconsistent from training jobs: a chip blamed in this many disagreements with different
    # partners (or once with a persistent diagnosis) is inconsistent.
    job_min_incidents: int = 2
    job_min_partners: int = 2

    @classmethod
    def from_section(cls, section: Mapping[str, Any], others: frozenset[str] = frozenset()) -> "AnalysisConfig":
        """The analysis keys of ``section``; ``others`` are keys another part owns (left alone)."""
        return cls(**parse_keys(cls, section, others))


def parse_keys(cls: type, section: Mapping[str, Any], others: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Checked values of ``section`` for the fields of dataclass ``cls``; ``others`` are skipped."""
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in section.items():
        if key in others:
            continue
        f = known.get(key)
        if f is None:
            every = sorted(set(known) | others)
            raise ConfigError(f"config: unknown key '{key}' in [analysis]; known keys: {', '.join(every)}")
        default = f.default
        if isinstance(default, str):
            ok = isinstance(value, str) and value.strip() != ""
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok:
            raise ConfigError(f"config: [analysis] {key} must be a {type(default).__name__}, got {value!r}")
        if not isinstance(default, str) and value < 0:
            raise ConfigError(f"config: [analysis] {key} must not be negative, got {value!r}")
        values[key] = type(default)(value)
    for key in ("fdr", "breaker_share", "nondeterministic_cohort_share"):
        if key not in known:
            continue
        v = values.get(key, getattr(cls, key))
        if not 0 < v <= 1:
            raise ConfigError(f"config: [analysis] {key} must be in (0, 1], got {v!r}")
    return values
