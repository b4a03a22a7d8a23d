"""Hand-built results for analysis tests, loaded the way ``sdc analyze`` loads them.

Every test's results are written as records into a real store (SQLite by default; pass a
URL for PostgreSQL) and read back with the production loader ``sdc.analysis.load``, so a
value the loader mangles (an int16 overflow, a separator inside a string) fails the test.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sdc.analysis.evidence import Evidence
from sdc.analysis.load import load_evidence
from sdc.records import Chip, ProbeResult, Sweep
from sdc.store import Store
from sdc.store.migrate import upgrade

DAY = 86_400.0
_TEMPLATE: Path | None = None


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
    stack: str = "stack"


def records(results: list[R], hosts: dict[str, str] | None = None, model: str = "H100") -> list:
    """Chip, sweep and probe-result records for ``results`` (one complete sweep per chip and round)."""
    at = lambda s: datetime.fromtimestamp(s * DAY + 3600, tz=timezone.utc)  # noqa: E731
    chips = sorted({r.chip for r in results})
    host = {c: (hosts or {}).get(c, f"host-{c}") for c in chips}
    out: list = [Chip(c, host[c], i, "sim", model, 80 << 30, {"torch": "2.13.0"}, "stack", at(0)) for i, c in enumerate(chips)]
    # One sweep per host and round, covering all of the host's chips, as ``sdc sweep`` does.
    sweeps = sorted({(host[r.chip], r.sweep) for r in results})
    out += [Sweep(f"{h}-{s}", h, "quick", at(s), "complete", "test", finished_at=at(s)) for h, s in sweeps]
    for i, r in enumerate(results):
        judged = r.status in ("ok", "mismatch")
        out.append(ProbeResult(
            result_id=f"res-{i}", sweep_id=f"{host[r.chip]}-{r.sweep}", chip_id=r.chip, probe=r.probe, probe_version=1,
            case={"name": r.case, "dtype": "fp32"}, seed=r.seed, status=r.status, stack_hash=r.stack,
            repeats=r.repeats if judged else 0, distinct_repeat_digests=r.distinct if judged else 0,
            timings=[0.01] if r.throughput else [], observed_at=at(r.sweep), digest=r.digest if judged else None,
            throughput=r.throughput if judged else None, throughput_unit="TFLOP/s" if judged and r.throughput else None,
        ))
    return out


def _sqlite_url() -> str:
    """A fresh migrated SQLite database (copied from one migrated template: migrations take time)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        _TEMPLATE = Path(tempfile.mkdtemp(prefix="sdc-analysis-tests-")) / "template.db"
        upgrade(f"sqlite:///{_TEMPLATE}")
    path = Path(tempfile.mkdtemp(prefix="sdc-analysis-")) / "sdc.db"
    shutil.copy(_TEMPLATE, path)
    return f"sqlite:///{path}"


def build(results: list[R], hosts: dict[str, str] | None = None, model: str = "H100", url: str | None = None) -> Evidence:
    """Write ``results`` into a store (a fresh SQLite file unless ``url``) and load them back."""
    store = Store(url or _sqlite_url())  # no outbox: a write that fails raises
    try:
        store.write(records(results, hosts, model))
        return load_evidence(store.engine())
    finally:
        store.dispose()
        if url is None:
            shutil.rmtree(Path(store.url.split("///", 1)[1]).parent, ignore_errors=True)


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
