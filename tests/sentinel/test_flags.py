"""The reduced-gradient probe that replaces a per-step flag exchange under DDP: it must see a
non-finite value or a blown-up forward pass wherever it starts, and never fire on healthy
training (a firing costs an exchange)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sdc.digest import native
from sdc.sentinel.flags import GradientProbe, GradProbe


def _mlp(seed: int, bias: bool = True) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128, bias=bias), nn.GELU(), nn.Linear(128, 128, bias=bias), nn.GELU(),
                         nn.Linear(128, 8, bias=bias))


def _grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, corrupt=None) -> list[torch.Tensor]:
    """One backward; ``corrupt(layer_index, output)`` may change one layer's forward output."""
    model.zero_grad(set_to_none=True)
    handles = []
    if corrupt is not None:
        for i, layer in enumerate(model):
            handles.append(layer.register_forward_hook(lambda m, a, out, i=i: corrupt(i, out)))
    nn.functional.mse_loss(model(x), y).backward()
    for h in handles:
        h.remove()
    return list(model.parameters())


def test_a_non_finite_value_anywhere_in_the_forward_pass_reaches_the_probe():
    missed = []
    for seed in range(12):
        for bias in (True, False):
            model = _mlp(seed, bias)
            g = torch.Generator().manual_seed(seed)
            x, y = torch.randn(16, 64, generator=g), torch.randn(16, 8, generator=g)
            for layer in range(5):  # every layer's output, one element, far from the first row/column
                row, col = (seed * 7) % 16, 100 + seed % 20 if layer < 4 else 5 + seed % 3
                value = float("nan") if seed % 2 else float("inf")

                def corrupt(i, out, layer=layer, row=row, col=col, value=value):
                    if i == layer:  # as the layer computed it: its gradient flows back through it
                        mask = torch.ones_like(out)
                        mask[row, col % out.shape[1]] = value
                        return out * mask
                magnitude = GradientProbe(_grads(model, x, y, corrupt)).magnitude()
                if magnitude is not None and magnitude == magnitude and magnitude < float("inf"):
                    missed.append((seed, bias, layer))
    # The whole first row of each weight gradient: no blind spot left (64 elements of it
    # missed a value in a bias-free last layer's output beyond their reach).
    assert missed == []


def test_an_exponent_upset_that_overflows_the_loss_shows_as_a_thousandfold_jump():
    fired = 0
    for seed in range(20):
        model = _mlp(seed)
        probe = GradProbe()
        g = torch.Generator().manual_seed(100 + seed)
        for step in range(12):
            x, y = torch.randn(16, 64, generator=g), torch.randn(16, 8, generator=g)
            corrupt = None
            if step == 11:  # an exponent upset of one output element (x 2**100): the loss overflows to Inf
                def corrupt(i, out):
                    if i == 4:
                        mask = torch.ones_like(out)
                        mask.view(-1)[seed % out.numel()] = 2.0 ** 100
                        return out * mask
            look, _ = probe.fires(GradientProbe(_grads(model, x, y, corrupt)).magnitude())
            assert not look or step == 11
            fired += look and step == 11
    assert fired == 20


def test_healthy_training_never_fires_the_probe():
    for seed in range(5):
        model = _mlp(seed)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        probe = GradProbe()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(64, 8, generator=g)
        for step in range(150):
            x = torch.randn(16, 64, generator=g) * (1 + 4 * (step % 37 == 0))  # now and then a wild batch
            look, _ = probe.fires(GradientProbe(_grads(model, x, torch.tanh(x @ w))).magnitude())
            assert not look, (seed, step)
            opt.step()


def _gradients(dtype: torch.dtype, seed: int) -> list[nn.Parameter]:
    """Parameters of every shape the probe reads differently, with gradients of ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.zeros(shape, dtype=dtype)) for shape in [(8, 100), (8,), (3, 4, 5, 5), (), (2, 9000)]]
    for p in params:
        p.grad = (torch.randn(p.shape, generator=g) * 10.0 ** (seed % 5 - 2)).to(dtype)
    return params


def _torch_reading(probe: GradientProbe) -> float:
    return float(torch.linalg.vector_norm(torch.cat([v.reshape(-1).double() for v in probe.views()]), float("inf")))


@pytest.mark.skipif(not native.magnitude_available(), reason="sdc's C kernel was not built (no C compiler at install)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_the_c_kernel_reads_what_the_torch_views_read_for_every_dtype(dtype):
    """On the CPU the probe reads the gradients from their addresses in one C call; it must see
    exactly the elements and values the views see, and every NaN and Inf among them."""
    for seed in range(10):
        params = _gradients(dtype, seed)
        probe = GradientProbe(params)
        assert probe.native, "the CPU probe must take the C path"
        assert probe.magnitude() == _torch_reading(probe)
        # A special value in each read region, also at its last element, and one just outside.
        for index, at in ((1, (7,)), (0, (0, 99)), (2, (0, 3, 4, 4)), (3, ()), (4, (0, 4095))):
            for value in (float("nan"), float("inf"), float("-inf")):
                saved = params[index].grad[at].clone()
                params[index].grad[at] = value
                got = probe.magnitude()
                assert (got != got) if value != value else got == float("inf"), (dtype, seed, index, value, got)
                params[index].grad[at] = saved
        params[4].grad[0, 4096] = float("nan")  # past the longest row the probe reads
        params[0].grad[1, 0] = float("inf")  # the second row: not read
        assert probe.magnitude() == _torch_reading(probe) < float("inf")


@pytest.mark.skipif(not native.magnitude_available(), reason="sdc's C kernel was not built (no C compiler at install)")
def test_the_probe_falls_back_to_the_views_for_a_gradient_laid_out_unlike_its_parameter():
    params = _gradients(torch.float32, 0)
    probe = GradientProbe(params)
    params[0].grad = params[0].grad.t().contiguous().t()  # same values, column-major
    params[0].grad[0, 50] = float("inf")
    assert probe._native_magnitude() is None and probe.magnitude() == float("inf")
    for p in params:
        p.grad = None
    assert probe.magnitude() is None
