"""Hand-built evidence for analysis tests: a few chips, a few cohorts, exact control."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sdc.analysis.evidence import Evidence, EvidenceBuilder

DAY = 86_400.0


@dataclass
class R:
    """One probe result. ``sweep`` doubles as the round; ``host`` defaults to one host per chip."""

    chip: str
    sweep: int = 0
    case: str = "square"
    digest: str | None = "good"
    status: str = "ok"
    distinct: int = 1
    repeats: int = 3
    throughput: float | None = 100.0
    seed: int = 0
    probe: str = "gemm"


def build(results: list[R], hosts: dict[str, str] | None = None, model: str = "H100") -> Evidence:
    b = EvidenceBuilder()
    chips = sorted({r.chip for r in results})
    b.add_chips((c, (hosts or {}).get(c, f"host-{c}"), model) for c in chips)
    sweeps = sorted({(r.chip, r.sweep) for r in results})
    b.add_sweeps((f"{c}-{s}", s * DAY) for c, s in sweeps)
    b.add_results(
        [r.chip for r in results], [f"{r.chip}-{r.sweep}" for r in results], [r.probe for r in results], [1] * len(results),
        [json.dumps({"name": r.case, "dtype": "fp32"}, sort_keys=True) for r in results], [r.seed for r in results],
        ["stack"] * len(results), [r.status for r in results], [r.digest for r in results], [r.repeats for r in results],
        [r.distinct for r in results], [r.throughput for r in results], [f"res-{i}" for i in range(len(results))],
    )
    return b.build()


def fleet(chips: int, sweeps: int = 1, cases: tuple[str, ...] = ("a", "b", "c", "d"), overrides: dict | None = None) -> list[R]:
    """Healthy results for chips c00..; overrides map chip -> function(R) -> R to plant faults."""
    out = []
    for s in range(sweeps):
        for i in range(chips):
            for case in cases:
                r = R(chip=f"c{i:02d}", sweep=s, case=case, digest=f"good-{case}-{s}", seed=s)
                fix = (overrides or {}).get(r.chip)
                out.append(fix(r) if fix else r)
    return out
