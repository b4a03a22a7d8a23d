"""Knobs of the quarantine policy and the circuit breaker: their keys of the ``[analysis]`` table.

The table is shared with the analysis thresholds (``sdc.analysis.config``); ``load`` reads both
from one table, so a misspelt key is still refused with every known key listed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from sdc.analysis.config import AnalysisConfig, parse_keys


@dataclass(frozen=True)
class QuarantineConfig:
    # The circuit breaker: at most this share of the fleet quarantined within the window.
    breaker_share: float = 0.05
    breaker_window_hours: float = 24.0
    # A released chip returns to healthy after this many clean complete sweeps.
    probation_sweeps: int = 3
    # The actor of automatic transitions.
    actor: str = "sdc-analysis"

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> "QuarantineConfig":
        analysis_keys = frozenset(f.name for f in fields(AnalysisConfig))
        return cls(**parse_keys(cls, section, analysis_keys))


QUARANTINE_KEYS = frozenset(f.name for f in fields(QuarantineConfig))


def load(section: Mapping[str, Any]) -> tuple[AnalysisConfig, QuarantineConfig]:
    """Both configurations of an ``[analysis]`` table; ``ConfigError`` names a bad key."""
    return AnalysisConfig.from_section(section, QUARANTINE_KEYS), QuarantineConfig.from_section(section)
