"""Performance: from the database to verdicts for 1,000 and 10,000 chips x 10 sweeps x 20 cases.

10,000 chips give 2 million probe results. Each measurement runs ``analyze_store`` (load the
evidence, analyse, store verdicts and quarantine events) in a fresh child process and
reports its wall time, its own CPU time (on a machine shared with other work the wall time
grows with the load average; the CPU time does not) and peak memory (max RSS). Targets: <= 30 s and <= 2 GB at 10,000 chips,
and time(10,000) / time(1,000) <= 12 (linear growth). The fleets are bulk-loaded once and
kept (SQLite files under --cache; PostgreSQL schemas) so later runs only measure.

    .venv/bin/python benchmarks/bench_analysis.py                     # SQLite
    SDC_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python benchmarks/bench_analysis.py
    .venv/bin/python benchmarks/bench_analysis.py --chips 1000 2000   # other sizes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sdc.records import utcnow  # noqa: E402
from sdc.sim.fleet import STATUS_NAMES, FleetSpec, SimulatedFleet  # noqa: E402
from sdc.store.engine import make_engine, normalise_url  # noqa: E402
from sdc.store.migrate import upgrade  # noqa: E402

SWEEPS, FAULTS = 10, {"persistent": 3, "intermittent": 3, "slow": 3, "nondeterministic": 3}

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from sdc.quarantine.pipeline import analyze_store
from sdc.config import Settings
from sdc.store import Store
url = sys.argv[1]
start = time.perf_counter()
store = Store(url)
report = analyze_store(store, Settings(database_url=url, data_dir=Path("."), outbox_dir=Path("."), tables={}))
seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
peak_mb = usage.ru_maxrss / 1024
try:  # VmHWM is this program's own peak; ru_maxrss can carry the forking parent's size
    peak_mb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
except (OSError, StopIteration):
    pass
print(json.dumps({"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime, "max_rss_mb": peak_mb,
                  "results": report.results, "chips": report.chips, "verdicts": len(report.verdicts)}))
"""


def rows(fleet: SimulatedFleet, stamp):
    """Chip, sweep and probe-result rows as tuples in table column order (bulk-load speed)."""
    s = fleet.spec
    shift = utcnow().timestamp() - 3600 - float(fleet.sweep_time.max())
    records = fleet.records(time_shift=shift)  # chips and sweeps come first
    chips, sweeps = [], []
    for _ in range(s.chips):
        c = next(records)
        chips.append((c.chip_id, c.host, c.index, c.vendor, c.model, c.memory_bytes, json.dumps(c.stack), c.stack_hash, stamp(c.observed_at)))
    for _ in range(int(fleet.sweep_exists.sum())):  # hosts that joined late have no earlier sweeps
        w = next(records)
        sweeps.append((w.sweep_id, w.host, w.suite, stamp(w.started_at), w.status, w.sdc_version,
                       stamp(w.finished_at) if w.finished_at else None, None, w.message))
    # Results straight from the fleet's arrays (building two million record objects is slow).
    cases = [json.dumps({"dtype": d, "name": n, "params": {}, "shape": [1024, 1024]}, sort_keys=True, separators=(",", ":"))
             for _, n, d in s.cases]
    sweep_stamp = [stamp(datetime.fromtimestamp(t + shift, tz=timezone.utc)) for t in fleet.sweep_time]
    stack = [f"simstack{int(code):08x}" for code in fleet.chip_stack]
    results = []
    for i in range(fleet.r_chip.size):
        c, k, sw = int(fleet.r_chip[i]), int(fleet.r_case[i]), int(fleet.r_sweep[i])
        status = STATUS_NAMES[int(fleet.r_status[i])]
        tp = float(fleet.r_throughput[i])
        judged, timed = status in ("ok", "mismatch"), status in ("ok", "mismatch") and tp == tp
        retest = fleet.r_retest_of[i] >= 0
        results.append((
            f"{fleet.sweep_ids[sw]}-{c:06d}-{k:02d}" + ("-retest" if retest else ""), fleet.sweep_ids[sw], fleet.chip_ids[c],
            s.cases[k][0], 1, cases[k], cases[k],
            int(fleet.r_round[i]), status, stack[c], int(fleet.r_repeats[i]) if judged else 0, int(fleet.r_distinct[i]) if judged else 0,
            f"[{1.0 / tp:.6g}]" if timed else "[]", sweep_stamp[sw],
            f"{k:04x}{fleet.r_round[i]:04x}{fleet.chip_stack[c]:04x}{int(fleet.r_digest[i]):020x}" if judged else None,
            None, None, None, None, tp if timed else None, "TFLOP/s" if timed else None, "" if judged else "simulated failure",
            '{"throttle_reasons":["hw_thermal_slowdown"]}' if fleet.r_throttled[i] else "{}",
        ))
    return chips, sweeps, results


RESULT_COLUMNS = ("result_id, sweep_id, chip_id, probe, probe_version, \"case\", case_key, seed, status, stack_hash, repeats, "
                  "distinct_repeat_digests, timings, observed_at, digest, reference_digest, max_abs_err, max_rel_err, error_bound, "
                  "throughput, throughput_unit, message, telemetry")
CHIP_COLUMNS = "chip_id, host, \"index\", vendor, model, memory_bytes, stack, stack_hash, observed_at"
SWEEP_COLUMNS = "sweep_id, host, suite, started_at, status, sdc_version, finished_at, pid, message"


def build_sqlite(path: Path, chips: int) -> str:
    url = f"sqlite:///{path}"
    if path.exists():
        return url
    import sqlite3

    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    upgrade(f"sqlite:///{tmp}")
    fleet = SimulatedFleet(FleetSpec(chips=chips, sweeps=SWEEPS, faults=FAULTS), seed=chips)
    chip_rows, sweep_rows, result_rows = rows(fleet, lambda t: t.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" "))
    db = sqlite3.connect(tmp)
    db.execute("PRAGMA synchronous=OFF")
    for table, cols, data in (("chips", CHIP_COLUMNS, chip_rows), ("sweeps", SWEEP_COLUMNS, sweep_rows), ("probe_results", RESULT_COLUMNS, result_rows)):
        db.executemany(f"INSERT INTO {table} ({cols}) VALUES ({','.join('?' * (cols.count(',') + 1))})", data)
    db.commit()
    db.close()
    tmp.rename(path)
    return url


def build_postgres(base_url: str, chips: int) -> str:
    from sqlalchemy import text

    schema = f"sdc_bench_{chips}"
    sep = "&" if "?" in base_url else "?"
    url = f"{normalise_url(base_url)}{sep}options=-csearch_path%3D{schema}"
    admin = make_engine(base_url)
    with admin.begin() as connection:
        exists = connection.execute(text("SELECT 1 FROM information_schema.tables WHERE table_schema=:s AND table_name='probe_results'"), {"s": schema}).first()
        if exists:
            n = connection.execute(text(f'SELECT count(*) FROM "{schema}".probe_results')).scalar_one()
            if n > 0:
                return url
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    upgrade(url)
    fleet = SimulatedFleet(FleetSpec(chips=chips, sweeps=SWEEPS, faults=FAULTS), seed=chips)
    chip_rows, sweep_rows, result_rows = rows(fleet, lambda t: t.isoformat())
    engine = make_engine(url)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for table, cols, data in (("chips", CHIP_COLUMNS, chip_rows), ("sweeps", SWEEP_COLUMNS, sweep_rows), ("probe_results", RESULT_COLUMNS, result_rows)):
            with cursor.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                for row in data:
                    copy.write_row(row)
        raw.commit()
    finally:
        raw.close()
        engine.dispose()
    return url


def measure(url: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, url], capture_output=True, text=True, cwd=ROOT, check=False)
    if out.returncode != 0:
        raise SystemExit(f"analysis failed on {url}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chips", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--cache", default=os.environ.get("SDC_BENCH_CACHE", "/tmp/sdc-bench"))
    parser.add_argument("--postgres", default=os.environ.get("SDC_TEST_DATABASE_URL"), help="PostgreSQL URL (default $SDC_TEST_DATABASE_URL)")
    args = parser.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    backends = [("sqlite", lambda n: build_sqlite(cache / f"fleet-{n}x{SWEEPS}.db", n))]
    if args.postgres:
        backends.append(("postgresql", lambda n: build_postgres(args.postgres, n)))
    ok = True
    for name, build in backends:
        times = {}
        for n in args.chips:
            start = time.perf_counter()
            url = build(n)
            built = time.perf_counter() - start
            m = measure(url)
            times[n] = m["seconds"]
            ok &= n < 10000 or (m["seconds"] <= 30 and m["max_rss_mb"] <= 2048)
            print(f"{name:10s} {n:>6,} chips: {m['results']:>9,} results -> {m['verdicts']} verdicts in {m['seconds']:6.1f} s "
                  f"(analysis process CPU {m['cpu_seconds']:.1f} s; load average {os.getloadavg()[0]:.1f}), "
                  f"peak {m['max_rss_mb']:6.0f} MB (fleet ready in {built:.0f} s)", flush=True)
        if len(times) >= 2:
            small, large = min(times), max(times)
            ratio = times[large] / times[small]
            print(f"{name:10s} time({large:,}) / time({small:,}) = {ratio:.1f} (size ratio {large / small:.0f}; target <= 12)")
            ok &= ratio <= 12 * (large / small) / 10
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
