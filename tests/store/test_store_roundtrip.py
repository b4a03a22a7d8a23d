"""Every record kind goes into the store and comes back equal, on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy import select

from sdc.records import RECORD_TYPES, canonical_json
from sdc.store.models import ChipRow, ProbeResultRow
from sdc.store.reader import iter_records
from sdc.store.writer import count_rows
from tests.store import samples


def _by_id(records):
    return {(r.KIND, r.record_id): r for r in records}


def test_every_record_kind_round_trips(store):
    records = samples.one_of_each()
    assert {r.KIND for r in records} == {cls.KIND for cls in RECORD_TYPES}
    store.write(records)
    back = list(iter_records(store.engine()))
    assert _by_id(back) == _by_id(records)
    # Times come back timezone-aware UTC, to the microsecond.
    assert all(r.observed_at.tzinfo is not None for r in back if r.KIND == "probe_result")


def test_writing_twice_stores_each_record_once(store):
    records = samples.one_of_each()
    store.write(records)
    before = count_rows(store.engine())
    store.write(records)
    store.write(list(reversed(records[:3])) + records[3:])
    assert count_rows(store.engine()) == before
    assert sum(before.values()) == len(records)


def test_cohort_key_is_canonical_case_json(store):
    records = samples.one_of_each()
    store.write(records)
    with store.engine().connect() as connection:
        keys = dict(connection.execute(select(ProbeResultRow.result_id, ProbeResultRow.case_key)).all())
    results = [r for r in records if r.KIND == "probe_result"]
    assert keys == {r.result_id: canonical_json(r.case) for r in results}


def test_sweep_status_advances_from_running_and_never_back(store):
    c = samples.chips(1)
    running = samples.sweep(status="running")
    store.write([*c, running])
    done = replace(running, status="complete", finished_at=running.started_at + timedelta(minutes=1))
    store.write([done])
    store.write([running])  # a late replay of the first record must not undo the final status
    (back,) = [r for r in iter_records(store.engine(), ["sweep"])]
    assert back == done


def test_chip_follows_its_newest_observation(store):
    (chip,) = samples.chips(1)
    store.write([chip])
    moved = replace(chip, host="node-b", index=5, observed_at=chip.observed_at + timedelta(days=1))
    store.write([moved])
    store.write([chip])  # older observation arrives late: ignored
    with store.engine().connect() as connection:
        host, index = connection.execute(select(ChipRow.host, ChipRow.index)).one()
    assert (host, index) == ("node-b", 5)


def test_bulk_ingest_round_trips_exactly(migrated_url, tmp_path):
    """Enough rows for the bulk path (COPY on PostgreSQL), through the ingest encoders."""
    from sdc.store.engine import make_engine
    from sdc.store.ingest import ingest
    from sdc.store.writer import COPY_THRESHOLD

    c = samples.chips(3)
    s = samples.sweep()
    records = [*c, s, *samples.results(s.sweep_id, c, COPY_THRESHOLD + 100)]
    path = tmp_path / "bulk.jsonl"
    path.write_text(samples.jsonl(records))
    engine = make_engine(migrated_url)
    try:
        assert ingest(engine, [str(path)]).offered["probe_result"] == COPY_THRESHOLD + 100
        assert _by_id(iter_records(engine)) == _by_id(records)
    finally:
        engine.dispose()
