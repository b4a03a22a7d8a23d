"""Eight processes ingest into one database at once: every record arrives, nobody fails.

Real processes (forked, each with its own engine and connections), real PostgreSQL and a real
SQLite file, all eight writing at the same moment and sharing the same chips, which is
what a fleet of nodes reporting to one database does.
"""

from __future__ import annotations

import multiprocessing
import queue

from tests.store import samples

from sdc.store.engine import make_engine
from sdc.store.ingest import ingest

PROCESSES = 8
RESULTS_EACH = 2_000


def _ingest_worker(url: str, path: str, barrier, results) -> None:
    try:
        engine = make_engine(url)
        barrier.wait(timeout=120)
        offered = ingest(engine, [path]).offered
        engine.dispose()
        results.put((path, offered.get("probe_result", 0), None))
    except BaseException as exc:  # reported to the parent, which fails the test
        results.put((path, 0, f"{type(exc).__name__}: {exc}"))


def test_eight_processes_ingest_into_one_database(migrated_url, tmp_path):
    shared_chips = samples.chips(4)
    paths = []
    for i in range(PROCESSES):
        sweep = samples.sweep(host=f"node{i}")
        records = [*shared_chips, sweep, *samples.results(sweep.sweep_id, shared_chips, RESULTS_EACH, seed=i)]
        path = tmp_path / f"node{i}.jsonl"
        path.write_text(samples.jsonl(records))
        paths.append(str(path))

    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(PROCESSES)
    results = context.Queue()
    workers = [context.Process(target=_ingest_worker, args=(migrated_url, p, barrier, results)) for p in paths]
    for w in workers:
        w.start()
    outcomes = []
    try:
        for _ in workers:
            outcomes.append(results.get(timeout=240))
    except queue.Empty:
        pass
    for w in workers:
        w.join(timeout=30)
        if w.is_alive():
            w.kill()

    errors = [error for _, _, error in outcomes if error]
    assert errors == []
    assert len(outcomes) == PROCESSES and all(n == RESULTS_EACH for _, n, _ in outcomes)
    stored = samples.counts(migrated_url)
    assert stored["probe_result"] == PROCESSES * RESULTS_EACH
    assert stored["chip"] == len(shared_chips)
    assert stored["sweep"] == PROCESSES
