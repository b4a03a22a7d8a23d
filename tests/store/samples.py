"""Sample records of every kind, with every field set (and some left at their defaults), and
the few helpers the store tests share to feed them through the real command line (``run``),
write them as a ledger (``jsonl``) and see what was stored (``counts``)."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from typing import Iterable, Mapping

from click.testing import CliRunner, Result

from sdc.cli import cli
from sdc.records import (
    Chip,
    JobEvent,
    ProbeResult,
    QuarantineEvent,
    Record,
    Sweep,
    Verdict,
    stack_hash,
)
from sdc.store.engine import make_engine
from sdc.store.writer import count_rows

T0 = datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
STACK = {"torch": "2.13.0", "runtime": "cuda 13.0", "driver": "580.65", "blas": "cublasLt", "extra": {"ü": [1, 2.5]}}


def chips(n: int = 2, host: str = "node-a01") -> list[Chip]:
    return [
        Chip(f"GPU-{uuid.uuid4()}", host, i, "nvidia", "H200 141GB", 141 << 30, STACK, stack_hash(STACK), T0)
        for i in range(n)
    ]


def sweep(host: str = "node-a01", status: str = "complete") -> Sweep:
    return Sweep(
        uuid.uuid4().hex, host, "standard", T0, status, "0.1.0",
        T0 + timedelta(minutes=3) if status != "running" else None, 4242, "",
    )  # fmt: skip


def results(sweep_id: str, chip_list: list[Chip], n: int, seed: int = 0) -> list[ProbeResult]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        chip = chip_list[i % len(chip_list)]
        ok = i % 7 != 3
        out.append(
            ProbeResult(
                result_id=uuid.uuid4().hex,
                sweep_id=sweep_id,
                chip_id=chip.chip_id,
                probe="gemm",
                probe_version=2,
                case={"shape": [64, 128, 32], "name": "gemm_small", "dtype": "bfloat16",
                      "params": {"alpha": 1e-05, "label": "größe ✓", "beta": 0.1}},
                seed=2**40 + i,
                status="ok" if ok else "mismatch",
                stack_hash=chip.stack_hash,
                repeats=3,
                distinct_repeat_digests=1 if ok else 2,
                timings=[rng.random() * 1e-3 for _ in range(3)],
                observed_at=T0 + timedelta(microseconds=137 * i),
                digest=f"{rng.getrandbits(256):064x}",
                reference_digest=None if i % 2 else f"{rng.getrandbits(256):064x}",
                max_abs_err=rng.random() / 3,
                max_rel_err=None if i % 3 == 0 else 5e-324,
                error_bound=0.0078125,
                throughput=rng.uniform(100, 900),
                throughput_unit="TFLOP/s",
                message="" if ok else "2 of 4096 elements outside the bound",
                telemetry={"temp_c": 71.5, "clocks": {"sm": 1980}, "throttle": []},
            )
        )
    return out


def job_events(chip_list: list[Chip]) -> list[JobEvent]:
    return [
        JobEvent(uuid.uuid4().hex, "job-7", 1000, 3, 8, "node-a01", "grad_mismatch", "persistent",
                 T0 + timedelta(seconds=5), chip_list[0].chip_id, {"param": "layers.3.w", "ulps": [1, 2]}),
        JobEvent(uuid.uuid4().hex, "job-7", 1001, 0, 8, "node-b", "spike", "unattributed", T0 + timedelta(seconds=6)),
    ]  # fmt: skip


def verdicts(chip_list: list[Chip], evidence: list[ProbeResult]) -> list[Verdict]:
    return [
        Verdict(uuid.uuid4().hex, "analysis-1", chip_list[0].chip_id, "wrong", "high", 3, 40,
                "3 of 40 gemm results disagree with the cohort", T0 + timedelta(hours=1), 11.5, 1.25e-9, 0.93,
                T0, T0 + timedelta(minutes=2), [r.result_id for r in evidence[:3]], {"q": 0.01}),
        Verdict(uuid.uuid4().hex, "analysis-1", chip_list[1].chip_id, "slow", "low", 1, 40, "slightly slow",
                T0 + timedelta(hours=1)),
    ]  # fmt: skip


def quarantine_events(verdict: Verdict) -> list[QuarantineEvent]:
    return [
        QuarantineEvent(uuid.uuid4().hex, verdict.chip_id, "healthy", "suspect", "sdc analyze",
                        verdict.summary, T0 + timedelta(hours=1, seconds=1), verdict.verdict_id, {"dry_run": False}),
        QuarantineEvent(uuid.uuid4().hex, verdict.chip_id, "suspect", "quarantined", "alice", "confirmed",
                        T0 + timedelta(hours=2)),
    ]  # fmt: skip


def one_of_each(n_results: int = 9) -> list[Record]:
    """A small ledger: chips, a sweep, results, job events, verdicts, quarantine events."""
    c = chips()
    s = sweep()
    r = results(s.sweep_id, c, n_results)
    v = verdicts(c, r)
    return [*c, s, *r, *job_events(c), *v, *quarantine_events(v[0])]


def jsonl(records: Iterable[Record]) -> str:
    """The records as a ledger file's text: one JSON line a record."""
    return "".join(r.to_json() + "\n" for r in records)


def run(url: str, *args: str, input: str | None = None, env: Mapping[str, str] | None = None) -> Result:
    """``sdc --db URL ARGS...`` through the real command line, in this process."""
    return CliRunner().invoke(cli, ["--db", url, *args], input=input, env=env)


def counts(url: str) -> dict[str, int]:
    """Rows stored per record kind in the database at ``url``."""
    engine = make_engine(url)
    try:
        return count_rows(engine)
    finally:
        engine.dispose()
