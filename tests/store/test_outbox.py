"""The outbox: records that cannot reach the database are spooled, then delivered exactly once."""

from __future__ import annotations

import fcntl
import os
import socket

import pytest
from tests.store import samples
from tests.store.samples import counts, run

from sdc.store import Store
from sdc.store.outbox import Outbox


@pytest.fixture
def closed_port_url():
    """A PostgreSQL URL on a port where nothing listens: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://sdc@127.0.0.1:{port}/sdc"


def write_ledger(path, n_results):
    records = samples.one_of_each(n_results)
    path.write_text(samples.jsonl(records))
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
    (tmp_path / "parents.jsonl").write_text(samples.jsonl([*chip_list, sweep]))
    results = samples.results(sweep.sweep_id, chip_list, 6)
    (tmp_path / "results.jsonl").write_text(samples.jsonl(results))
    assert run(closed_port_url, "ingest", str(tmp_path / "parents.jsonl")).exit_code == 0
    result = run(migrated_url, "ingest", str(tmp_path / "results.jsonl"))
    assert result.exit_code == 0, result.output
    assert counts(migrated_url)["probe_result"] == 6


def test_a_clock_stepped_back_does_not_reorder_the_outbox(closed_port_url, migrated_url, tmp_path, monkeypatch):
    """Spool order is the outbox's own sequence: results still replay after their chips."""
    import time

    chip_list, sweep = samples.chips(2), samples.sweep()
    down = Store(closed_port_url, tmp_path / "outbox")
    assert down.deliver([*chip_list, sweep]).spooled == 3
    real = time.time_ns()
    monkeypatch.setattr(time, "time_ns", lambda: real - 10_000_000_000)  # NTP stepped the clock back 10 s
    monkeypatch.setattr(time, "time", lambda: (real - 10_000_000_000) / 1e9)
    assert down.deliver(samples.results(sweep.sweep_id, chip_list, 5)).spooled == 5
    monkeypatch.undo()

    up = Store(migrated_url, tmp_path / "outbox")
    assert up.flush() == 8
    assert up.outbox.set_aside() == [] and up.outbox.pending() == []
    assert counts(migrated_url)["probe_result"] == 5
    up.dispose()


def test_flush_delivers_a_file_whose_parents_are_in_a_later_file(migrated_url, tmp_path):
    chip_list, sweep = samples.chips(2), samples.sweep()
    outbox = Outbox(tmp_path / "outbox")
    outbox.spool(samples.results(sweep.sweep_id, chip_list, 4))  # first in the queue, but its chips ...
    outbox.spool([*chip_list, sweep])  # ... arrive in the next file
    store = Store(migrated_url, tmp_path / "outbox")
    assert store.flush() == 7
    assert outbox.set_aside() == [] and outbox.pending() == []
    store.dispose()


def test_an_analysis_that_cannot_be_stored_is_not_spooled(closed_port_url, tmp_path):
    """Replayed later, its transitions would double those of the next analysis."""
    from sdc.store import AnalysisNotStored

    ledger = samples.one_of_each(3)
    analysis = [r for r in ledger if r.KIND in ("verdict", "quarantine_event")]
    down = Store(closed_port_url, tmp_path / "outbox")
    with pytest.raises(AnalysisNotStored, match="none of its .* verdicts and transitions were stored"):
        down.deliver(analysis)
    assert down.outbox.pending() == []


def test_database_down_and_outbox_unusable_says_nothing_was_kept(closed_port_url, tmp_path):
    blocker = tmp_path / "outbox"
    blocker.write_text("a file where the outbox directory should be\n")
    down = Store(closed_port_url, blocker)
    records = samples.chips(2)
    delivery = down.deliver(records)
    assert (delivery.stored, delivery.spooled, delivery.lost) == (0, 0, 2)
    assert "2 records were NOT kept" in delivery.message and str(blocker) in delivery.message


def test_temporary_files_of_a_killed_spooler_are_removed(closed_port_url, tmp_path):
    import subprocess

    outbox_dir = tmp_path / "outbox"
    outbox_dir.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = outbox_dir / f".q0000000000000007-h-abcd.jsonl.{dead.pid}.1234abcd.tmp"
    stale.write_text('{"record": "chip", "chi')  # SIGKILL mid-write
    alive = outbox_dir / f".q0000000000000008-h-abcd.jsonl.{os.getppid()}.1234abcd.tmp"
    alive.write_text('{"record": "chip"')  # another process still writing it
    Store(closed_port_url, outbox_dir).deliver(samples.chips(1))
    assert not stale.exists()
    assert alive.exists()
    assert len(Outbox(outbox_dir).pending()) == 1


def test_database_down_and_outbox_full_says_nothing_was_kept(closed_port_url, tmp_path, sdc_env):
    """The outbox's filesystem full: the spool write fails (a 4 KiB file-size limit stands in)."""
    import resource
    import signal
    import subprocess
    import sys

    path = tmp_path / "ledger.jsonl"
    write_ledger(path, 200)

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    env = {**os.environ, "SDC_DATABASE_URL": closed_port_url}
    proc = subprocess.run(
        [sys.executable, "-m", "sdc", "ingest", str(path)], env=env, capture_output=True, text=True, preexec_fn=small_disk
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "the outbox cannot keep the input" in proc.stderr and "nothing was kept" in proc.stderr
    assert Outbox(outbox_dir(sdc_env)).pending() == []  # no half-written spool file either
