"""Ingest throughput and memory: a 100,000-ProbeResult JSON-lines file into SQLite (and
PostgreSQL), then a 1 GB file streamed into SQLite.

For each backend it prints records/s of ``sdc.store.ingest.ingest`` (read, validate every line,
check references, write in one transaction: everything ``sdc ingest`` does after start-up)
and, as the baseline measured in the same run, a raw DBAPI ``executemany`` of the very same
rows, already converted to tuples, into an equally fresh database. Targets: >= 20,000
ProbeResults/s and >= 0.5 of the raw executemany rate.

The streaming case ingests the small file and a ``--stream-gb`` file (default 1 GB; 0 skips
it) in a fresh process each and prints both peak RSS figures: streaming means the second is
about the first, not ~13 times it.

    .venv/bin/python benchmarks/bench_ingest.py [-n 100000] [--pg postgresql://...] [--stream-gb 1]

PostgreSQL runs when ``--pg`` or ``SDC_TEST_DATABASE_URL`` gives a database; each run uses a
schema of its own and drops it afterwards.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import timeit
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import create_engine, text

from sdc.records import Chip, ProbeResult, Sweep, stack_hash
from sdc.store.engine import make_engine, normalise_url
from sdc.store.ingest import Problems, ingest, iter_valid
from sdc.store.migrate import upgrade
from sdc.store.writer import columns, encoder

TARGET_RATE = 20_000
TARGET_RATIO = 0.5


def make_file(path: Path, n: int, seed: int = 0) -> None:
    """Chips and a sweep, then ``n`` ProbeResults like a fleet's sweeps produce them."""
    rng = random.Random(seed)
    stack = {"torch": "2.13.0", "runtime": "cuda 13.0", "driver": "580.1", "blas": "cublas"}
    chips = [
        Chip(f"GPU-{uuid.UUID(int=rng.getrandbits(128))}", f"node{i // 8:04d}", i % 8, "nvidia", "H200",
             141 << 30, stack, stack_hash(stack))
        for i in range(64)
    ]
    t0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
    sweep = Sweep(uuid.uuid4().hex, "node0000", "standard", t0, "complete", "0.1.0", t0 + timedelta(hours=1))
    with open(path, "w") as fh:
        for record in (*chips, sweep):
            fh.write(record.to_json() + "\n")
        for i in range(n):
            m = rng.choice((256, 1024, 4096))
            r = ProbeResult(
                result_id=uuid.UUID(int=rng.getrandbits(128)).hex,
                sweep_id=sweep.sweep_id,
                chip_id=chips[i % len(chips)].chip_id,
                probe="gemm",
                probe_version=1,
                case={"name": f"gemm_{m}", "shape": [m, m, m], "dtype": "bfloat16", "params": {"trans_b": False}},
                seed=i % 16,
                status="ok" if i % 1000 else "mismatch",
                stack_hash=chips[0].stack_hash,
                repeats=3,
                distinct_repeat_digests=1,
                timings=[rng.uniform(1e-4, 1e-3) for _ in range(3)],
                observed_at=t0 + timedelta(seconds=i / 10),
                digest=f"{rng.getrandbits(128):032x}",
                reference_digest=None,
                max_abs_err=rng.uniform(0, 1e-3),
                max_rel_err=rng.uniform(0, 1e-3),
                error_bound=2e-2,
                throughput=rng.uniform(500, 900),
                throughput_unit="TFLOP/s",
            )
            fh.write(r.to_json() + "\n")


def raw_rows(path: Path, dialect: str) -> tuple[list[str], list[tuple]]:
    """The file's ProbeResults as DBAPI parameter tuples, in the form each driver stores.

    Converted before the clock starts: the baseline times the database and driver alone.
    """
    encode = encoder("probe_result", dialect, True)
    problems = Problems()
    rows = [encode(record) for _, record in iter_valid([str(path)], problems) if record.KIND == "probe_result"]
    assert not problems, problems.render()
    return list(columns("probe_result")), rows


def raw_executemany(url: str, names: list[str], rows: list[tuple], sqlite: bool) -> float:
    """Wall and this process's CPU seconds for one transaction of DBAPI executemany."""
    engine = make_engine(url)
    quoted = ", ".join(f'"{n}"' for n in names)
    marks = ", ".join(["?" if sqlite else "%s"] * len(names))
    sql = f"INSERT INTO probe_results ({quoted}) VALUES ({marks}) ON CONFLICT (result_id) DO NOTHING"
    with engine.connect() as connection:
        dbapi = connection.connection.dbapi_connection
        start, cpu = time.perf_counter(), time.process_time()
        cursor = dbapi.cursor()
        cursor.executemany(sql, rows)
        dbapi.commit()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    engine.dispose()
    return elapsed, cpu


def seed_parents(url: str, path: Path) -> None:
    """Store the file's chips and sweep so the raw baseline's foreign keys hold."""
    from sdc.records import from_json
    from sdc.store.writer import write_records

    with open(path, "rb") as fh:
        parents = [from_json(line) for line, _ in zip(fh, range(65))]
    engine = make_engine(url)
    write_records(engine, [r for r in parents if not isinstance(r, ProbeResult)])
    engine.dispose()


def run_backend(label: str, fresh_url, path: Path, n: int) -> tuple[float, float]:
    url = fresh_url()
    upgrade(url)
    engine = make_engine(url)
    start, cpu = time.perf_counter(), time.process_time()
    result = ingest(engine, [str(path)])
    ingest_s, ingest_cpu = time.perf_counter() - start, time.process_time() - cpu
    engine.dispose()
    assert result.offered.get("probe_result") == n, result.offered

    url = fresh_url()
    upgrade(url)
    seed_parents(url, path)
    names, rows = raw_rows(path, "sqlite" if url.startswith("sqlite") else "postgresql")
    raw_s, raw_cpu = raw_executemany(url, names, rows, url.startswith("sqlite"))
    ingest_rate, raw_rate = n / ingest_s, n / raw_s
    ratio = ingest_rate / raw_rate
    ok = "ok" if ingest_rate >= TARGET_RATE and ratio >= TARGET_RATIO else "BELOW TARGET"
    print(
        f"{label:<10} sdc ingest {ingest_rate:>9,.0f} ProbeResults/s ({ingest_s:5.2f} s)   "
        f"raw executemany {raw_rate:>9,.0f} rows/s ({raw_s:5.2f} s)   ratio {ratio:4.2f}   {ok}"
    )
    # On a shared machine wall time depends on the neighbours; CPU time of this process
    # (all of SQLite's work, the client side of PostgreSQL's) does much less.
    print(
        f"{'':<10} per CPU-second of this process: sdc ingest {n / ingest_cpu:>9,.0f}/s, "
        f"raw executemany {n / raw_cpu:>9,.0f}/s"
    )
    return ingest_rate, ratio


def grow_file(source: Path, target: Path, gigabytes: float) -> int:
    """``source``'s parents, then its results again and again with fresh ids, up to the size."""
    import json

    limit = int(gigabytes * 1e9)
    with open(source) as fh:
        lines = fh.readlines()
    parents, results = lines[:65], [json.loads(line) for line in lines[65:5065]]
    written, n = 0, 0
    with open(target, "w") as out:
        for line in parents:
            out.write(line)
            written += len(line)
        while written < limit:
            for obj in results:
                obj["result_id"] = uuid.UUID(int=n + (1 << 100)).hex
                line = json.dumps(obj, separators=(",", ":")) + "\n"
                out.write(line)
                written += len(line)
                n += 1
    return n


_CHILD = """
import resource, sys, time
from sdc.store.engine import make_engine
from sdc.store.ingest import ingest
from sdc.store.migrate import upgrade
url, path = sys.argv[1], sys.argv[2]
upgrade(url)
engine = make_engine(url)
start = time.perf_counter()
result = ingest(engine, [path])
print(result.offered.get("probe_result", 0), time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def ingest_in_child(url: str, path: Path) -> tuple[int, float, float]:
    """(ProbeResults, seconds, peak RSS in MB) of one ingest in a fresh process."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", _CHILD, url, str(path)], check=True, capture_output=True, text=True)
    n, seconds, rss_kb = out.stdout.split()
    return int(n), float(seconds), int(rss_kb) / 1024


def run_streaming(tmpdir: Path, small: Path, gigabytes: float) -> None:
    big = tmpdir / "big.jsonl"
    n_big = grow_file(small, big, gigabytes)
    size = big.stat().st_size
    n_small, small_s, small_rss = ingest_in_child(f"sqlite:///{tmpdir / 'stream-small.db'}", small)
    n, seconds, rss = ingest_in_child(f"sqlite:///{tmpdir / 'stream-big.db'}", big)
    assert n == n_big, (n, n_big)
    print(
        f"streaming  {size / 1e9:.2f} GB ({n:,} ProbeResults): {n / seconds:,.0f} ProbeResults/s, peak RSS {rss:,.0f} MB; "
        f"{small.stat().st_size / 1e6:.0f} MB file: peak RSS {small_rss:,.0f} MB; ratio {rss / small_rss:.2f} "
        f"for {size / small.stat().st_size:.0f}x the input"
    )
    big.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100_000, help="ProbeResults in the file")
    parser.add_argument("--pg", default=os.environ.get("SDC_TEST_DATABASE_URL"), help="PostgreSQL database URL")
    parser.add_argument("--stream-gb", type=float, default=1.0, help="size of the streaming case's file (0: skip)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sdc-bench-") as tmp:
        tmpdir = Path(tmp)
        path = tmpdir / "results.jsonl"
        make_file(path, args.n)
        size = path.stat().st_size
        print(f"input: {args.n:,} ProbeResults + 65 parents, {size / 1e6:.1f} MB ({size / (args.n + 65):.0f} B/line)")
        print(f"targets: >= {TARGET_RATE:,} ProbeResults/s and >= {TARGET_RATIO} of raw executemany")
        reference = min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000
        print(
            f"machine: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; "
            f"sum(range(1000)) takes {reference * 1e6:.1f} us here (a quiet modern core: ~8 us)"
        )

        counter = iter(range(1000))
        run_backend("sqlite", lambda: f"sqlite:///{tmpdir / f'bench{next(counter)}.db'}", path, args.n)

        if args.pg:
            admin = create_engine(normalise_url(args.pg), isolation_level="AUTOCOMMIT")
            schemas: list[str] = []

            def fresh_pg() -> str:
                schema = f"bench_{uuid.uuid4().hex[:10]}"
                with admin.connect() as connection:
                    connection.execute(text(f'CREATE SCHEMA "{schema}"'))
                schemas.append(schema)
                sep = "&" if "?" in args.pg else "?"
                return f"{normalise_url(args.pg)}{sep}options=-csearch_path%3D{schema}"

            try:
                run_backend("postgresql", fresh_pg, path, args.n)
            finally:
                with admin.connect() as connection:
                    for schema in schemas:
                        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
        else:
            print("postgresql skipped: give --pg URL or set SDC_TEST_DATABASE_URL")
        if args.stream_gb > 0:
            run_streaming(tmpdir, path, args.stream_gb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
