"""`sdc check` on a 10,000-chip database: wall time per call, against `sdc --version` start-up.

Both are measured here, in the same run, as fresh processes (how node-problem-detector and
Slurm call them). Target: `sdc check` at most 1 s. Run: .venv/bin/python benchmarks/bench_check.py
[--chips N] [--runs R]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdc.records import Chip, ProbeResult, QuarantineEvent, Sweep, Verdict, new_id  # noqa: E402
from sdc.store import Store  # noqa: E402
from sdc.store.migrate import upgrade  # noqa: E402

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
PER_HOST = 8


def build(url: str, chips: int) -> str:
    upgrade(url)
    store = Store(url)
    records: list = []
    hosts = (chips + PER_HOST - 1) // PER_HOST
    for h in range(hosts):
        host = f"node{h:05d}"
        sweep = Sweep(new_id(), host, "quick", T0, "complete", "bench", finished_at=T0 + timedelta(minutes=3))
        records.append(sweep)
        for i in range(min(PER_HOST, chips - h * PER_HOST)):
            chip_id = f"GPU-{h:05d}-{i}"
            records.append(Chip(chip_id, host, i, "nvidia", "H100", 80 << 30, {"torch": "2.13"}, "s1", T0))
            for case in ("square", "odd"):
                records.append(
                    ProbeResult(new_id(), sweep.sweep_id, chip_id, "gemm", 1, {"name": case, "dtype": "bf16"}, 0, "ok", "s1",
                                3, 1, [0.01], T0, digest="d")
                )
    # One chip in a hundred has a verdict and a quarantine history.
    for n in range(0, chips, 100):
        chip_id = f"GPU-{n // PER_HOST:05d}-{n % PER_HOST}"
        verdict = Verdict(new_id(), "a1", chip_id, "wrong", "high", 3, 3, "wrong on gemm", T0 + timedelta(days=1), score=0.9)
        records += [
            verdict,
            QuarantineEvent(new_id(), chip_id, "healthy", "suspect", "sdc", "verdict", T0 + timedelta(days=1), verdict.verdict_id),
            QuarantineEvent(new_id(), chip_id, "suspect", "quarantined", "sdc", "repeat", T0 + timedelta(days=2), verdict.verdict_id),
        ]
    store.write(records)
    store.dispose()
    return "node00000"  # has a quarantined chip: the check reads states, verdicts, and exits 1


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str], env: dict, runs: int) -> tuple[float, float, int]:
    """Median wall time and median CPU time (user + system) of a fresh process, and its exit code.

    CPU time is printed too because on a shared machine wall time mostly measures the queue.
    """
    walls, cpus, code = [], [], None
    for _ in range(runs):
        cpu0, start = _child_cpu(), time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        cpus.append(_child_cpu() - cpu0)
        code = done.returncode
    return statistics.median(walls), statistics.median(cpus), code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chips", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/fleet.db"
        start = time.perf_counter()
        host = build(url, args.chips)
        print(f"built a {args.chips}-chip database ({2 * args.chips} probe results) in {time.perf_counter() - start:.1f} s")
        env = dict(os.environ, SDC_DATABASE_URL=url, SDC_HOSTNAME=host, XDG_CONFIG_HOME=tmp)
        sdc = [sys.executable, "-m", "sdc"]
        version, version_cpu, _ = timed(sdc + ["--version"], env, args.runs)
        check, check_cpu, code = timed(sdc + ["check"], env, args.runs)
        line = subprocess.run(sdc + ["check"], env=env, capture_output=True, text=True).stdout.strip()
    print(f"sdc --version start-up : {version * 1000:7.0f} ms wall, {version_cpu * 1000:7.0f} ms CPU (median of {args.runs})")
    print(f"sdc check, {args.chips} chips: {check * 1000:7.0f} ms wall, {check_cpu * 1000:7.0f} ms CPU; exit {code}: {line}")
    print(f"ratio check / start-up : {check / version:7.2f}x wall, {check_cpu / version_cpu:5.2f}x CPU")
    print(f"target <= 1.0 s wall   : {'met' if check <= 1.0 else 'NOT met'} (CPU: {'met' if check_cpu <= 1.0 else 'NOT met'})")
    load = os.getloadavg()[0]
    print(f"machine load (1 min)   : {load:.1f} on {os.cpu_count()} cores (start-up times scale with it)")


if __name__ == "__main__":
    main()
