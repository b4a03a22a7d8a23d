"""The outbox: records that cannot reach the database are spooled, then delivered exactly once."""

from __future__ import annotations

import fcntl
import os
import socket

import pytest
from click.testing import CliRunner
from tests.store import samples

from sdc.cli import cli
from sdc.store import Store
from sdc.store.engine import make_engine
from sdc.store.outbox import Outbox
from sdc.store.writer import count_rows


@pytest.fixture
def closed_port_url():
    """A PostgreSQL URL on a port where nothing listens: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://sdc@127.0.0.1:{port}/sdc"


def run(url, *args):
    return CliRunner().invoke(cli, ["--db", url, *args])


def counts(url) -> dict[str, int]:
    engine = make_engine(url)
    try:
        return count_rows(engine)
    finally:
        engine.dispose()


def write_ledger(path, n_results):
    records = samples.one_of_each(n_results)
    path.write_text("".join(r.to_json() + "\n" for r in records))
    return records


def outbox_dir(sdc_env):
    return sdc_env / "data" / "sdc" / "outbox"


def test_unreachable_database_spools_and_flush_delivers_once(closed_port_url, migrated_url, tmp_path, sdc_env):
    records = write_ledger(tmp_path / "a.jsonl", 20)
    result = run(closed_port_url, "ingest", str(tmp_path / "a.jsonl"))
    assert result.exit_code == 0, result.output
    assert "database unavailable" in result.output
    assert f"{len(records)} records kept in the outbox" in result.output
    assert "'sdc flush' delivers them" in result.output
    assert len(Outbox(outbox_dir(sdc_env)).pending()) == 1

    result = run(migrated_url, "flush")
    assert result.exit_code == 0, result.output
    assert f"delivered {len(records)} of {len(records)} spooled records" in result.output
    stored = counts(migrated_url)
    assert sum(stored.values()) == len(records)
    assert Outbox(outbox_dir(sdc_env)).pending() == []

    result = run(migrated_url, "flush")
    assert "is empty" in result.output
    assert counts(migrated_url) == stored


def test_a_later_successful_write_delivers_the_outbox(closed_port_url, migrated_url, tmp_path, sdc_env):
    first = write_ledger(tmp_path / "a.jsonl", 5)
    second = write_ledger(tmp_path / "b.jsonl", 7)
    assert run(closed_port_url, "ingest", str(tmp_path / "a.jsonl")).exit_code == 0
    result = run(migrated_url, "ingest", str(tmp_path / "b.jsonl"))
    assert result.exit_code == 0, result.output
    assert f"also delivered {len(first)} records waiting in the outbox" in result.output
    assert sum(counts(migrated_url).values()) == len(first) + len(second)
    assert Outbox(outbox_dir(sdc_env)).pending() == []


def evidence(n_results):
    """A ledger without an analysis's verdicts and transitions (those are never spooled)."""
    return [r for r in samples.one_of_each(n_results) if r.KIND not in ("verdict", "quarantine_event")]


def test_store_deliver_spools_then_replays_with_the_next_write(closed_port_url, migrated_url, tmp_path):
    down = Store(closed_port_url, tmp_path / "outbox")
    records = evidence(4)
    delivery = down.deliver(records)
    assert (delivery.stored, delivery.spooled) == (0, len(records))
    assert "database unavailable" in delivery.message and "sdc flush" in delivery.message
    down.deliver(records)  # the same records spooled twice

    up = Store(migrated_url, tmp_path / "outbox")
    more = evidence(2)
    delivery = up.deliver(more)
    assert (delivery.stored, delivery.replayed) == (len(more), 2 * len(records))
    assert sum(counts(migrated_url).values()) == len(records) + len(more)  # none doubled, none lost
    assert up.flush() == 0
    up.dispose()


def test_a_spool_file_the_database_refuses_is_set_aside(migrated_url, tmp_path, sdc_env):
    outbox = Outbox(outbox_dir(sdc_env))
    good = samples.one_of_each(3)
    chips = samples.chips(1)
    orphans = samples.results("no-such-sweep", chips, 2)  # the foreign key can never hold
    outbox.spool(orphans)
    outbox.spool(good)
    (outbox.directory / ".half-written.tmp").write_text('{"record": "chi')  # a crash mid-spool

    result = run(migrated_url, "flush")
    assert result.exit_code == 2
    assert f"delivered {len(good)} of {len(good) + len(orphans)} spooled records" in result.output
    assert "kept as *.bad" in result.output
    assert len(outbox.set_aside()) == 1 and outbox.pending() == []
    assert sum(counts(migrated_url).values()) == len(good)


def test_only_one_process_replays_at_a_time(migrated_url, tmp_path):
    store = Store(migrated_url, tmp_path / "outbox")
    store.outbox.spool(samples.one_of_each(2))
    fd = os.open(tmp_path / "outbox" / ".replay.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process is replaying
    try:
        assert store.flush() == 0
        assert len(store.outbox.pending()) == 1
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert store.flush() > 0
    store.dispose()


def test_spooled_parents_are_stored_before_children_that_need_them(closed_port_url, migrated_url, tmp_path):
    """A sweep whose chips and sweep record were spooled can still store its results later."""
    chip_list = samples.chips(2)
    sweep = samples.sweep(status="running")
    down = Store(closed_port_url, tmp_path / "outbox")
    assert down.deliver([*chip_list, sweep]).spooled == 3

    up = Store(migrated_url, tmp_path / "outbox")
    delivery = up.deliver(samples.results(sweep.sweep_id, chip_list, 4))
    assert (delivery.stored, delivery.replayed) == (4, 3)
    stored = counts(migrated_url)
    assert (stored["chip"], stored["sweep"], stored["probe_result"]) == (2, 1, 4)
    up.dispose()


def test_ingest_can_refer_to_chips_waiting_in_the_outbox(closed_port_url, migrated_url, tmp_path, sdc_env):
    chip_list, sweep = samples.chips(2), samples.sweep()
    (tmp_path / "parents.jsonl").write_text("".join(r.to_json() + "\n" for r in [*chip_list, sweep]))
    results = samples.results(sweep.sweep_id, chip_list, 6)
    (tmp_path / "results.jsonl").write_text("".join(r.to_json() + "\n" for r in results))
    assert run(closed_port_url, "ingest", str(tmp_path / "parents.jsonl")).exit_code == 0
    result = run(migrated_url, "ingest", str(tmp_path / "results.jsonl"))
    assert result.exit_code == 0, result.output
    assert counts(migrated_url)["probe_result"] == 6
