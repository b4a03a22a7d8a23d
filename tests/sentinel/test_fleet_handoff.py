"""From a training job to the fleet: the sentinel's events, stored as they were written by
real gloo ranks, must make the fleet analysis blame the chip the sentinel named."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdc.config import Settings
from sdc.quarantine.pipeline import analyze_store
from sdc.store import Store
from sdc.store.migrate import upgrade

pytestmark = pytest.mark.slow


def test_sentinel_events_become_verdicts_on_the_named_chips(jobs, tmp_path):
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    upgrade(url)
    store = Store(url)
    events = jobs["replicas"].events + jobs["local"].events
    store.write(events)
    # Four chips in all: quarantining two is half this "fleet", which the circuit breaker
    # (default 5%) would rightly refuse; this test is about attribution, so lift it.
    settings = Settings(
        database_url=url, data_dir=Path(tmp_path), outbox_dir=tmp_path / "outbox", tables={"analysis": {"breaker_share": 1.0}}
    )
    report = analyze_store(store, settings, dry_run=True)
    store.dispose()

    verdicts = {v.chip_id: v for v in report.verdicts}
    # Rank 3's forward pass was corrupted every time: replay proved it persistent.
    persistent = verdicts["host:testhost:cpu:3"]
    assert persistent.kind == "inconsistent" and persistent.severity == "high"
    assert {e.event_id for e in events if e.diagnosis == "persistent"} <= set(persistent.evidence_ids)
    # Rank 2 had one gradient bit flipped once: recorded, not convicted.
    assert verdicts["host:testhost:cpu:2"].kind == "inconsistent" and verdicts["host:testhost:cpu:2"].severity == "low"
    # Rank 1 disagreed in both jobs (a flipped parameter, then a backward fault), each time
    # with other partners: a recurring offender, convicted without a persistent replay.
    recurring = verdicts["host:testhost:cpu:1"]
    assert recurring.severity == "high" and recurring.details["incidents"] >= 2 and len(recurring.details["jobs"]) == 2
    # Rank 0 only ever saw a bad batch that its buddy reproduced: the data, not the chip.
    assert "host:testhost:cpu:0" not in verdicts
    assert not report.breaker_tripped
    quarantined = {e.chip_id for e in report.transitions if e.to_state == "quarantined"}
    assert quarantined == {"host:testhost:cpu:1", "host:testhost:cpu:3"}
