"""The sentinel's events reach the store, or the outbox when the database is down, from a
background thread that the training loop never waits for."""

from __future__ import annotations

import threading

import torch
from torch import nn

from sdc.records import JobEvent, new_id, utcnow
from sdc.sentinel import ReplicaSentinel, SentinelConfig
from sdc.sentinel.events import EventSink
from sdc.store import Store
from sdc.store.reader import iter_records


def _event(step: int) -> JobEvent:
    return JobEvent(event_id=new_id(), job_id="j", step=step, rank=0, world_size=1, host="h", kind="grad_check",
                    diagnosis="ok", observed_at=utcnow(), chip_id="host:h:cpu:0", details={"suspects": []})


def test_events_reach_the_store(store):
    sink = EventSink(store.deliver, flush_seconds=0.05)
    for step in range(5):
        sink.submit(_event(step))
    sink.close()
    stored = [r for r in iter_records(store.engine(), kinds=["job_event"])]
    assert sorted(e.step for e in stored) == [0, 1, 2, 3, 4]


def test_unreachable_database_spools_to_the_outbox(tmp_path):
    store = Store("postgresql://nobody@127.0.0.1:9/none", tmp_path / "outbox")
    sink = EventSink(store.deliver, flush_seconds=0.05)
    for step in range(3):
        sink.submit(_event(step))
    sink.close()
    assert store.outbox.pending_records() == 3
    assert sink.failed == 0


def test_submit_never_waits_for_delivery():
    release = threading.Event()
    delivered: list[int] = []

    def slow_deliver(batch):
        release.wait(60)
        delivered.extend(e.step for e in batch)

    sink = EventSink(slow_deliver, flush_seconds=0.01)
    sink.submit(_event(0))
    for step in range(1, 100):
        sink.submit(_event(step))  # returns although the database is stuck
    assert delivered == []
    release.set()
    sink.close()
    assert sorted(delivered) == list(range(100))


def test_training_goes_on_when_events_cannot_be_delivered(tmp_path):
    def broken(batch):
        raise OSError("disk full")

    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sentinel = ReplicaSentinel(model, opt, config=SentinelConfig(grad_every=1, param_every=1, check_budget=0), deliver=broken)
    for step in range(5):
        x = torch.randn(8, 4)
        sentinel.on_step_begin(step, x)
        loss = model(x).pow(2).mean()
        sentinel.on_loss(loss)
        loss.backward()
        sentinel.on_grads_ready()
        opt.step()
        opt.zero_grad()
        assert sentinel.on_step_end(step).ok
    sentinel.close()
    assert sentinel.sink.failed > 0
    assert sentinel.last_verified_step == 4
