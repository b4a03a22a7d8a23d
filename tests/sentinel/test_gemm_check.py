"""Sampled GEMM checksums: a corrupted Linear output (forward) or input gradient (backward)
on a checked layer is named; healthy GEMMs of many shapes and dtypes never trip the bound."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sdc.faults import Corruption, Timing
from sdc.sentinel import ReplicaSentinel, SentinelConfig
from sdc.sentinel.gemm_check import GemmChecks, checksum_gap
from sdc.sentinel.inject import ComputeFault


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_healthy_gemms_stay_within_the_roundoff_bound(dtype):
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for trial in range(60):
        n, k, m = (int(v) for v in torch.randint(1, 200, (3,), generator=g))
        x = (torch.randn(n, k, generator=g) * 10 ** float(torch.randn(1, generator=g))).to(dtype)
        w = torch.randn(m, k, generator=g).to(dtype)
        b = torch.randn(m, generator=g).to(dtype)
        y = nn.functional.linear(x, w, b)
        worst = max(worst, checksum_gap(y, x, w, b, g))
    assert worst < 1.0, worst


def _tf32(t: torch.Tensor) -> torch.Tensor:
    """``t`` rounded to TF32's 10-bit mantissa, to nearest, as a tensor core rounds fp32 operands."""
    words = t.contiguous().view(torch.int32)
    return ((words + 0x1000) & ~0x1FFF).view(torch.float32)


@pytest.fixture
def float32_matmul_precision():
    before = torch.get_float32_matmul_precision()
    yield torch.set_float32_matmul_precision
    torch.set_float32_matmul_precision(before)


def test_a_tf32_product_is_healthy_when_tf32_is_on_and_a_real_upset_is_still_seen(float32_matmul_precision):
    # What an fp32 nn.Linear computes on a tensor core with TF32 on: operands rounded to TF32,
    # products accumulated in fp32. The checksum judges it against the precision in effect.
    # A short inner dimension: the fp32 bound grows with it, TF32's error only with its root.
    g = torch.Generator().manual_seed(3)
    x, w = torch.randn(64, 32, generator=g), torch.randn(96, 32, generator=g)
    y = _tf32(x) @ _tf32(w).t()
    float32_matmul_precision("highest")
    assert checksum_gap(y, x, w, None, g) > 1.0  # under an fp32 bound TF32's roundoff looks like a fault
    float32_matmul_precision("high")
    assert checksum_gap(y, x, w, None, g) < 1.0
    bad = Corruption("bitflip", index=777, bit=27).apply(y)
    assert checksum_gap(bad, x, w, None, g) > 1.0


@pytest.mark.parametrize("bit", [30, 29, 27, 24, 22])
def test_an_upset_in_one_output_element_is_seen(bit):
    g = torch.Generator().manual_seed(bit)
    x, w = torch.randn(64, 128, generator=g), torch.randn(96, 128, generator=g)
    y = x @ w.t()
    assert checksum_gap(y, x, w, None, g) < 1.0
    bad = Corruption("bitflip", index=777, bit=bit).apply(y)
    assert checksum_gap(bad, x, w, None, g) > 1.0


def _train(fault_where: str | None, steps: int = 12, budget: float = 0.0):
    """Verdicts of a small MLP's steps with checksums on 3 layers every step (``budget=0``:
    whatever they cost against these tiny steps; else under that check budget)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 4))
    fault = None
    if fault_where == "forward":
        fault = ComputeFault(model[2], Corruption("bitflip", index=9, bit=27), Timing("persistent"))
    elif fault_where == "backward":
        # The middle layer's backward GEMM (dX = dY W) gets one element wrong.
        upset = Corruption("bitflip", index=5, bit=28)

        def plant(module, inputs, output):  # corrupt dX inside the layer's own GEMM node
            node = output.grad_fn  # AddmmBackward0: (d bias, dX, d Wᵀ)
            node.register_hook(lambda gi, go: (gi[0], upset.apply(gi[1]), gi[2]))

        model[2].register_forward_hook(plant)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    config = SentinelConfig(gemm_check_every=1, gemm_check_layers=3, audit_every=0, check_budget=budget)
    sentinel = ReplicaSentinel(model, optimizer, config=config, deliver=lambda e: None)
    if fault is not None:
        fault.arm()
    verdicts = []
    for step in range(steps):
        x = torch.randn(32, 16)
        optimizer.zero_grad()
        sentinel.on_step_begin(step, None)
        loss = model(x).pow(2).mean()
        sentinel.on_loss(loss)
        loss.backward()
        sentinel.on_grads_ready()
        optimizer.step()
        verdicts.append(sentinel.on_step_end(step))
    sentinel.close()
    return verdicts


def test_a_corrupted_layer_is_named_by_its_checksum():
    verdicts = _train("forward")
    named = [v for v in verdicts if v.diagnosis == "divergence"]
    assert named and all(s.params == ("2",) for v in named for s in v.suspects)
    assert all("gemm_check" in dict(v.details["findings"]) for v in named)


def test_a_corrupted_backward_gemm_is_named():
    verdicts = _train("backward")
    named = [v for v in verdicts if v.diagnosis == "divergence"]
    assert named and all(s.params == ("2",) for v in named for s in v.suspects)


def test_a_healthy_run_passes_every_checksum():
    verdicts = _train(None, steps=30)
    assert all(v.ok for v in verdicts)
    assert sum("gemm_check" in dict(v.details["findings"]) for v in verdicts) == 30


def test_rotation_covers_every_linear_layer():
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(5)])
    checks = GemmChecks(model, layers=2)
    covered = set()
    for _ in range(3):  # three checked steps of two layers each: all five
        covered |= {name for name, _ in checks.chosen()}
        checks.arm()
        checks.disarm()
    assert covered == {"0", "1", "2", "3", "4"}


def test_the_checksums_are_a_periodic_check_under_the_budget():
    """At the default budget the checksums' measured cost stretches their period like any
    other check's (a tiny model: checks every step would cost far more than 1 %), and the
    time they take counts as the schedule's ``gemm`` kind."""
    verdicts = _train(None, steps=60, budget=SentinelConfig().check_budget)
    checked = [v for v in verdicts if "gemm" in v.checks]
    steps = [v.step for v in checked]
    assert steps[:2] == [0, 1] and len(steps) < 30, steps  # base period until a cost is learnt, then stretched
    assert checked[-1].details["check_period"]["gemm"] > 1 and all(v.ok for v in verdicts)


def test_in_place_ops_after_a_checked_layer_keep_working():
    """An in-place ReLU right after a checked Linear (common in real models) must not break."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 8), nn.ReLU(inplace=True), nn.Linear(8, 1))
    sentinel = ReplicaSentinel(model, config=SentinelConfig(gemm_check_every=1, gemm_check_layers=3, audit_every=0, check_budget=0),
                               deliver=lambda e: None)
    for step in range(3):
        x = torch.randn(5, 4)
        sentinel.on_step_begin(step, x)
        loss = model(x).pow(2).mean()
        sentinel.on_loss(loss)
        loss.backward()
        sentinel.on_grads_ready()
        verdict = sentinel.on_step_end(step)
        assert verdict.ok and "gemm" in verdict.checks
    assert sentinel.errors == 0
    sentinel.close()


def test_a_three_dimensional_input_is_checked_both_ways():
    """Sequence inputs (batch, tokens, features): the backward check finds the layer's GEMM node
    through the reshape."""
    layer = nn.Linear(8, 8)
    checks = GemmChecks(nn.Sequential(layer))
    checks.arm()
    x = torch.randn(2, 5, 8, requires_grad=True)
    layer(x).pow(2).sum().backward()
    assert checks._failures == []
    upset = Corruption("bitflip", index=5, bit=28)
    def plant(module, inputs, out):  # through the reshape, onto the layer's own GEMM node
        out.grad_fn.next_functions[0][0].register_hook(lambda gi, go: (gi[0], upset.apply(gi[1]), gi[2]))

    handle = layer.register_forward_hook(plant)
    checks.arm()  # re-registers the check after the fault's hook
    x = torch.randn(2, 5, 8, requires_grad=True)
    layer(x).pow(2).sum().backward()
    handle.remove()
    assert [(n, where) for n, where, _ in checks._failures] == [("0", "backward")]
