"""action='raise' stops the job with Megatron-LM's exit codes after the events are out;
'skip_step' leaves the parameters untouched. A single replica, in process."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sdc.sentinel import (
    EXIT_RERUN_ELSEWHERE,
    EXIT_VALIDATION_FAILED,
    ReplicaSentinel,
    SentinelAbort,
    SentinelConfig,
)
from sdc.sentinel.inject import ActivationFault


def _train(action: str, persistent: bool, fault_step: int = 6, steps: int = 10, **overrides):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fault = ActivationFault(model[2], flat_index=0, bit=30, persistent=persistent)
    events = []
    loss_of = lambda batch: nn.functional.mse_loss(model(batch[0]), batch[1])  # noqa: E731
    config = SentinelConfig(**{"grad_every": 1, "param_every": 1, "warmup_steps": 2, "action": action, "check_budget": 0, **overrides})
    sentinel = ReplicaSentinel(model, opt, config=config, replay_fn=loss_of, deliver=events.extend)
    snapshots = {}
    verdicts = []
    for step in range(steps):
        x = torch.randn(8, 4)
        batch = (x, x.sum(1, keepdim=True))
        if step == fault_step:
            fault.arm()
        sentinel.on_step_begin(step, batch)
        loss = loss_of(batch)
        sentinel.on_loss(loss)
        loss.backward()
        sentinel.on_grads_ready()
        fault.disarm()
        snapshots[step] = [p.detach().clone() for p in model.parameters()]
        opt.step()
        opt.zero_grad()
        verdicts.append(sentinel.on_step_end(step))
        snapshots[step] = (snapshots[step], [p.detach().clone() for p in model.parameters()])
    sentinel.close()
    return verdicts, events, snapshots


def test_raise_after_a_named_transient_fault_exits_17():
    with pytest.raises(SentinelAbort) as raised:
        _train("raise", persistent=False)
    assert raised.value.code == EXIT_VALIDATION_FAILED == 17
    assert raised.value.verdict.diagnosis == "transient"
    assert raised.value.verdict.step == 6


def test_raise_without_a_buddy_to_disambiguate_exits_16():
    with pytest.raises(SentinelAbort) as raised:
        _train("raise", persistent=True)
    assert raised.value.code == EXIT_RERUN_ELSEWHERE == 16
    assert raised.value.verdict.diagnosis == "unattributed"


def test_skip_step_keeps_the_parameters_and_training_goes_on():
    verdicts, events, snapshots = _train("skip_step", persistent=False)
    assert [v.diagnosis for v in verdicts].count("transient") == 1
    assert verdicts[6].skipped
    before, after = snapshots[6]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert all(torch.isfinite(p).all() for p in after)
    assert any(e.kind == "replay" and e.diagnosis == "transient" and e.details["suspect"] for e in events)


def test_anomaly_between_check_steps_is_recorded_for_its_rank_only():
    # Step 6 is no check step and flags are not exchanged: no replay, no action, an event.
    verdicts, events, _ = _train("raise", persistent=False, grad_every=5, local_every=0, param_every=0, flags_every=0)
    assert all(v.ok for v in verdicts)
    local = [e for e in events if e.kind == "local_check"]
    # The unchecked step poisoned the parameters, so later losses are non-finite as well.
    assert local and local[0].step == 6
    assert all(e.diagnosis == "unattributed" and e.details["local_only"] for e in local)
    assert local[0].details["reasons"] == ["nonfinite_loss"]
