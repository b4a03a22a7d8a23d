"""The agent's sweep is ``sdc sweep``'s sweep (``node_sweep``): with the database down it runs and
spools instead of skipping, a later flush delivers everything, and a sweep completed while the
database was down is stored ``complete`` — not marked ``incomplete`` by the next sweep."""

from __future__ import annotations

import socket
import sqlite3
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select

from sdc.agent.agent import Agent
from sdc.agent.config import agent_config
from sdc.store import Outbox, Store
from sdc.store.models import ChipRow, ProbeResultRow, SweepRow
from tests.agent.test_agent import settings_for

DEVICES = "cpu:0,cpu:1"


@contextmanager
def database_down(backend_url: str, monkeypatch):
    """Yields a URL of ``backend_url``'s backend that takes no writes while the block runs.

    PostgreSQL: a server port where nothing listens (refused at once). SQLite: the same file,
    write-locked by another connection (a stuck writer or a backup), with the busy wait cut to
    0.2 s so the test does not wait the default 30 s per write.
    """
    if not backend_url.startswith("sqlite"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        yield f"postgresql://sdc@127.0.0.1:{port}/sdc"
        return
    import sdc.store.engine

    monkeypatch.setattr(sdc.store.engine, "SQLITE_BUSY_TIMEOUT_MS", 200)
    holder = sqlite3.connect(backend_url[len("sqlite:///") :], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield backend_url
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        monkeypatch.undo()


def agent_for(url, tmp_path) -> Agent:
    settings = settings_for(url, tmp_path, {"devices": DEVICES, "busy_check": False, "duration": 1.0})
    return Agent(settings, agent_config(settings, {"sweep": "0 3 * * 0"}))


def stored(url):
    store = Store(url)
    try:
        with store.engine().connect() as conn:
            sweeps = dict(conn.execute(select(SweepRow.sweep_id, SweepRow.status)).all())
            results = conn.execute(select(func.count()).select_from(ProbeResultRow.__table__)).scalar_one()
            chips = conn.execute(select(func.count()).select_from(ChipRow.__table__)).scalar_one()
        return sweeps, results, chips
    finally:
        store.dispose()


def test_agent_sweep_with_the_database_down_spools_and_a_flush_delivers_everything(migrated_url, tmp_path, monkeypatch):
    with database_down(migrated_url, monkeypatch) as url:
        agent = agent_for(url, tmp_path)
        agent.sweep()
    outbox = Outbox(agent.settings.outbox_dir)
    assert outbox.pending(), "the agent's sweep must spool its records when the database is down"
    spooled = [line for path in outbox.pending() for line in path.read_text().splitlines()]
    assert any('"record":"sweep"' in line.replace(" ", "") and '"complete"' in line for line in spooled)

    store = Store(migrated_url, agent.settings.outbox_dir)
    try:
        delivered = store.flush()
    finally:
        store.dispose()
    assert delivered == len(spooled) and not outbox.pending()
    sweeps, results, chips = stored(migrated_url)
    assert list(sweeps.values()) == ["complete"]
    assert chips == 2 and results == sum('"record":"probe_result"' in line.replace(" ", "") for line in spooled) > 0


def test_a_sweep_completed_while_the_database_was_down_stays_complete_after_the_next_sweep(migrated_url, tmp_path, monkeypatch):
    with database_down(migrated_url, monkeypatch) as url:
        agent_for(url, tmp_path).sweep()  # spooled, final 'complete' record included
    second = agent_for(migrated_url, tmp_path)  # same data directory, so the same outbox
    second.sweep()  # flushes the outbox first, then marks abandoned sweeps, then sweeps
    assert not Outbox(second.settings.outbox_dir).pending()
    sweeps, _results, _chips = stored(migrated_url)
    assert len(sweeps) == 2 and set(sweeps.values()) == {"complete"}, sweeps

    store = Store(migrated_url, second.settings.outbox_dir)
    try:
        assert store.flush() == 0  # nothing left to deliver, nothing delivered twice
    finally:
        store.dispose()
    assert stored(migrated_url)[0] == sweeps


@pytest.mark.parametrize("key, value", [("case_timeout", 0), ("budget", "soon"), ("duration", -1)])
def test_agent_sweep_settings_are_checked_when_the_agent_starts(tmp_path, key, value):
    from sdc.config import ConfigError

    settings = settings_for("sqlite://", tmp_path, {key: value})
    with pytest.raises(ConfigError, match=f"\\[agent\\] {key} must be a number of seconds > 0"):
        agent_config(settings, {"sweep": "0 3 * * 0"})


def test_agent_sweep_uses_the_reference_cache_and_configured_case_timeout(tmp_path, monkeypatch, migrated_url):
    seen = {}
    import sdc.sweep.node_sweep as node_sweep_module

    real = node_sweep_module.run_sweep

    def spy(chips, probes, suite, sink, **kwargs):
        seen.update(kwargs["options"].__dict__)
        return real(chips, probes, suite, sink, **kwargs)

    monkeypatch.setattr(node_sweep_module, "run_sweep", spy)
    settings = settings_for(migrated_url, tmp_path, {"devices": "cpu:0", "busy_check": False, "case_timeout": 45, "duration": 2})
    Agent(settings, agent_config(settings, {"sweep": "0 3 * * 0"})).sweep()
    assert seen["case_timeout_s"] == 45.0
    assert seen["probe_settings"]["burn"] == {"duration_s": 2.0}
    assert seen["reference_cache"] == str(settings.data_dir / "reference-cache")
