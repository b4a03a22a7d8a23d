"""Recompute audits on one process: the deterministic settings are scoped to the audit and
put back, dropout is off only inside it, BatchNorm statistics are left as they were, and the
slice is the first rows of every tensor of the batch."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from sdc.sentinel import ReplicaSentinel, SentinelConfig
from sdc.sentinel.audit import audit_slice, deterministic_kernels


@pytest.mark.parametrize("before", [False, True])
def test_deterministic_mode_is_scoped_to_the_audit(before):
    torch.use_deterministic_algorithms(before)
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before, not before
    try:
        with deterministic_kernels():
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled() is before
        assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == (before, not before)
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def test_the_slice_takes_the_first_rows_of_every_tensor():
    batch = {"x": torch.arange(10).reshape(5, 2), "mask": [torch.ones(5), torch.tensor(3.0)], "name": "b"}
    piece = audit_slice(batch, 2)
    assert piece["x"].tolist() == [[0, 1], [2, 3]]
    assert piece["mask"][0].shape == (2,) and piece["mask"][1].item() == 3.0 and piece["name"] == "b"


def test_an_audit_leaves_the_model_as_it_found_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 1))
    events: list = []
    sentinel = ReplicaSentinel(model, config=SentinelConfig(audit_every=1, gemm_check_every=0), deliver=events.extend,
                               replay_fn=lambda x: model(x).pow(2).mean())
    x = torch.randn(16, 4)
    sentinel.on_step_begin(0, x)
    loss = model(x).pow(2).mean()
    sentinel.on_loss(loss)
    loss.backward()
    sentinel.on_grads_ready()
    stats = [b.clone() for b in model.buffers()]
    grads = [p.grad.clone() for p in model.parameters()]
    verdict = sentinel.on_step_end(0)
    sentinel.close()
    assert "audit" in verdict.checks and verdict.ok
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))  # running stats untouched
    assert all(torch.equal(a, p.grad) for a, p in zip(grads, model.parameters()))  # .grad untouched
    assert model[2].training and model.training  # dropout back in training mode
    assert not torch.are_deterministic_algorithms_enabled()
    audit = [e for e in events if e.kind == "audit"]
    assert audit and audit[0].details["comparison"] == "bit-exact" and audit[0].details["samples"] == 2


def test_a_cost_budget_stretches_the_audit_period():
    """check_budget=0.05: an audit costing about one step may run only every ~20 steps; without
    a budget it runs exactly every audit_every steps."""
    def audited_steps(budget: float) -> list[int]:
        model = nn.Linear(64, 64)
        slow = lambda x: (time.sleep(0.02), model(x).pow(2).mean())[1]  # noqa: E731
        sentinel = ReplicaSentinel(model, config=SentinelConfig(audit_every=5, check_budget=budget, gemm_check_every=0,
                                                                grad_every=0, param_every=0), deliver=lambda e: None, replay_fn=slow)
        steps = []
        for step in range(60):
            x = torch.randn(4, 64)
            sentinel.on_step_begin(step, x)
            time.sleep(0.02)  # a step as long as an audit
            verdict = sentinel.on_step_end(step)
            if "audit" in verdict.checks:
                steps.append(step)
        sentinel.close()
        return steps

    assert audited_steps(0.0) == list(range(0, 60, 5))
    stretched = audited_steps(0.05)
    # The first audit has no step time to weigh against, the second's cost is the first one
    # learnt (the first run's one-time costs are not): every later gap is stretched.
    assert stretched[:3] == [0, 5, 10] and len(stretched) <= 6 and all(b - a >= 10 for a, b in zip(stretched[2:], stretched[3:]))


def test_without_deterministic_kernels_the_audit_compares_within_a_tolerance():
    """An op with no deterministic variant ran: the replicas' gradient norms are compared within
    a relative tolerance instead of bit for bit, and an outlier is still named."""
    from sdc.sentinel.audit import TOLERANCE, Auditor
    from sdc.sentinel.identity import Peers

    class Replicas:  # the gather of four ranks' norms
        size, index = 4, 0

        def __init__(self, rows):
            self.rows = rows

        def gather(self, tensor):
            return torch.stack([torch.tensor(r, dtype=torch.float64) for r in self.rows])

    class Replayer:
        names = ["w", "b"]

    peers = Peers(tuple((r, "h", f"chip{r}") for r in range(4)))
    close = [[1.0, 2.0], [1.0 + TOLERANCE / 10, 2.0], [1.0, 2.0 - TOLERANCE / 10], [1.0, 2.0]]
    auditor = Auditor(Replicas(close), Replayer(), peers, samples=2)
    ok = auditor._tolerance_vote(0, torch.zeros(3), {})
    assert ok.diagnosis == "ok" and ok.details["comparison"] == "tolerance"
    off = [[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [1.3, 2.0]]
    found = Auditor(Replicas(off), Replayer(), peers, samples=2)._tolerance_vote(0, torch.zeros(3), {})
    assert found.diagnosis == "divergence" and [s.rank for s in found.suspects] == [3]
    assert found.suspects[0].params == ("w",)


def _audit_once(repeats: int, upset_call: int | None) -> list:
    """One audited step of a lone replica whose ``upset_call``-th forward pass (counting the
    step's own as the first) comes out wrong, as an intermittent unit would."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    calls = {"n": 0}

    def forward(x):
        calls["n"] += 1
        out = model(x)
        if calls["n"] == upset_call:
            out = out * 1.0001  # a small error: no NaN, no spike, just different bits
        return out.pow(2).mean()

    events: list = []
    sentinel = ReplicaSentinel(model, config=SentinelConfig(audit_every=1, audit_repeats=repeats, gemm_check_every=0),
                               deliver=events.extend, replay_fn=forward)
    x = torch.randn(16, 4)
    sentinel.on_step_begin(0, x)
    loss = forward(x)
    sentinel.on_loss(loss)
    loss.backward()
    sentinel.on_grads_ready()
    sentinel.on_step_end(0)
    sentinel.close()
    return [e for e in events if e.kind == "audit"]


def test_a_lone_replica_whose_audit_repeats_differ_is_seen_and_handed_to_the_fleet():
    """With no other replica, repeats that differ are recorded — which tensors, a probe case
    for the next sweep of the chip — but blamed on no one: alone, a chip fault and a kernel
    nondeterministic without saying so look alike. (With peers that reproduce their own
    audits the rank is named: the campaign, tests/sentinel/test_campaign.py.)"""
    healthy = _audit_once(repeats=2, upset_call=None)
    assert [e.diagnosis for e in healthy] == ["ok"] and healthy[0].details["repeats"] == 2
    for upset in (2, 3):  # the audit's first or its second computation
        found = _audit_once(repeats=2, upset_call=upset)
        assert [e.diagnosis for e in found] == ["unattributed"], (upset, found)
        details = found[0].details
        assert details["check"] == "repeats" and details["suspects"] == [] and details["second_opinion"] == "fleet"
        assert "0.weight" in details["repeats_differ"]["0"] and details["probe_case"]["kind"] == "sentinel_audit"
        assert details["chip_id"] == found[0].chip_id
    # One computation only: nothing to compare it with.
    assert [e.diagnosis for e in _audit_once(repeats=1, upset_call=2)] == ["ok"]
