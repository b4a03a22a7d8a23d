"""The sentinel's cost between checks: on steps without a check it reads nothing from the
device (losses are read in one go later), and what it deferred is still reported, by step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sdc.sentinel import ReplicaSentinel, SentinelConfig
from sdc.sentinel.losses import MAX_PENDING_LOSSES

NEVER = dict(grad_every=0, param_every=0, local_every=0, flags_every=0)


def _sentinel(events: list, device: str = "cpu", **overrides) -> tuple[nn.Module, ReplicaSentinel]:
    model = nn.Linear(4, 1).to(device)
    config = SentinelConfig(**{"warmup_steps": 2, **overrides})
    return model, ReplicaSentinel(model, config=config, deliver=events.extend)


def test_losses_between_checks_are_read_late_but_reported_with_their_step():
    events: list = []
    _, sentinel = _sentinel(events, **NEVER)
    steps = MAX_PENDING_LOSSES + 6
    for step in range(steps):
        sentinel.on_step_begin(step)
        loss = torch.tensor(float("nan") if step == 3 else 1.0 + 0.01 * step)
        sentinel.on_loss(loss)
        sentinel.on_grads_ready()
        sentinel.on_step_end(step)
        # Never more than the cap waits on the device: one read per MAX_PENDING_LOSSES steps.
        assert len(sentinel.losses.pending) == (step + 1) % MAX_PENDING_LOSSES
    assert sentinel.loss_tracker.seen == MAX_PENDING_LOSSES - 1  # every finite loss read so far
    sentinel.close()  # reads the rest
    assert sentinel.loss_tracker.seen == steps - 1
    local = [e for e in events if e.kind == "local_check"]
    assert [(e.step, e.details["reasons"]) for e in local] == [(3, ["nonfinite_loss"])]
    assert local[0].details["local_only"] and local[0].diagnosis == "unattributed"


def test_a_spike_on_a_check_step_is_flagged_on_that_step():
    events: list = []
    model, sentinel = _sentinel(events, grad_every=5, param_every=0, local_every=0, replay=False, check_budget=0)
    verdicts = []
    for step in range(11):
        sentinel.on_step_begin(step)
        loss = model(torch.ones(2, 4)).pow(2).mean() * 0 + (1000.0 if step == 10 else 1.0)
        sentinel.on_loss(loss)
        loss.backward()
        verdicts.append(sentinel.on_grads_ready())
        model.zero_grad()
        sentinel.on_step_end(step)
    sentinel.close()
    spikes = [e for e in events if e.kind == "local_check"]
    # A single replica, no replay: the spike is reported at its own step, not deferred.
    assert [e.step for e in spikes] == [10]
    assert spikes[0].details["reasons"] == ["loss_spike"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU to observe host syncs")
def test_no_host_sync_on_steps_without_a_check_on_the_gpu():
    events: list = []
    # flags_every=0: the per-step flags read one value by design (the reduced-gradient probe,
    # a sync right before the optimizer step); everything else must stay on the device.
    model, sentinel = _sentinel(events, device="cuda", grad_every=20, param_every=100, local_every=20, flags_every=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(8, 4, device="cuda")
    for step in range(1, 19):  # step 0 is a check step; 1..18 are not
        torch.cuda.set_sync_debug_mode("error")  # any host sync inside raises
        try:
            sentinel.on_step_begin(step, (x,))
            loss = model(x).pow(2).mean()
            sentinel.on_loss(loss)
            loss.backward()
            sentinel.on_grads_ready()
            opt.step()
            opt.zero_grad()
            sentinel.on_step_end(step)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert sentinel.errors == 0
    sentinel.close()


def test_at_the_defaults_a_nan_on_any_step_is_replayed():
    """flags_every=1 by default: a NaN on step 7 (no check due) is exchanged, replayed and
    reported at step 7 — not left as a rank-local note."""
    events: list = []
    model = nn.Linear(4, 1)
    sentinel = ReplicaSentinel(model, config=SentinelConfig(), deliver=events.extend,
                               replay_fn=lambda x: model(x).pow(2).mean())
    verdicts = []
    for step in range(10):
        x = torch.full((2, 4), float("nan")) if step == 7 else torch.ones(2, 4)
        sentinel.on_step_begin(step, x)
        loss = model(x).pow(2).mean()
        sentinel.on_loss(loss)
        loss.backward()
        sentinel.on_grads_ready()
        model.zero_grad()
        verdicts.append(sentinel.on_step_end(step))
    sentinel.close()
    assert [v.step for v in verdicts if not v.ok] == [7]
    # A check step's verdict says when the checks run next (step 0: the base period, no costs yet).
    assert verdicts[0].details["check_period"]["params"] == 20 and verdicts[0].details["next_check_step"]["params"] == 20
    replays = [e for e in events if e.kind == "replay"]
    assert [(e.step, e.details["reasons"], e.details["replayed"]) for e in replays] == [(7, ["nonfinite_loss"], True)]
    assert not [e for e in events if e.details.get("local_only")]
