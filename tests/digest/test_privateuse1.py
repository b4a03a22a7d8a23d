"""Digests and float statistics on a PrivateUse1 accelerator (the ``testdev`` test backend).

The backend has no Triton and no Inductor code generator, like a young vendor backend: a
digest must equal the CPU's for every dtype and layout, must never try torch.compile (which
stalled the first sentinel step for ~54 s on OpenReg), and statistics the backend cannot
compute in float64 are computed on the host with equal values.
"""

from __future__ import annotations

import pytest
import torch

import sdc.digest.core as core
from sdc.digest import allow_compile, digest, digest_sums, eager_digest_sums, float_stats, tensor_sums
from tests.testdev import load_or_skip

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int8, torch.uint8, torch.bool,
          torch.int16, torch.int32, torch.int64, torch.complex64]


@pytest.fixture
def testdev():
    load_or_skip()
    return [torch.device("testdev", 0), torch.device("testdev", 1)]


def _random(dtype: torch.dtype, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (n * torch.empty((), dtype=dtype).element_size(),), generator=g, dtype=torch.uint8)
    return raw.bool() if dtype == torch.bool else raw.view(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_digest_on_the_device_equals_the_cpu(testdev, dtype):
    for n, seed in ((1, 1), (1000, 2), ((1 << 17) + 3, 3)):
        cpu = _random(dtype, n, seed)
        for device in testdev:
            on_device = cpu.to(device)
            assert on_device.device == device
            assert digest(on_device) == digest(cpu)
            assert [int(v) for v in digest_sums(on_device)] == [int(v) for v in eager_digest_sums(cpu)]


def test_layouts_digest_their_logical_bytes(testdev):
    base = _random(torch.float32, 64 * 48, 7).reshape(64, 48)
    for view in (base.t(), base[::3, 5:], base.reshape(48, 64)[:, :10]):
        assert digest(view.to(testdev[1])) == digest(view)


def test_tensor_sums_of_many_tensors_match_the_cpu(testdev):
    tensors = [_random(dtype, 333 + i, i) for i, dtype in enumerate(DTYPES)]
    on_device = tensor_sums([t.to(testdev[0]) for t in tensors])
    assert on_device.device == testdev[0]
    assert torch.equal(on_device.cpu(), tensor_sums(tensors))


def test_no_compile_is_tried_for_a_device_inductor_has_no_backend_for(testdev, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda *a, **k: calls.append(a) or (lambda words: None))
    monkeypatch.setattr(core, "_compiled", None)
    monkeypatch.setattr(core, "_compiled_failed", False)
    big = _random(torch.int32, 1 << 18, 11)
    assert not core.inductor_supports("testdev")
    for allowed in (False, True):  # a training process, then a sweep worker
        monkeypatch.setattr(core, "_compile_allowed", allowed)
        assert digest(big.to(testdev[0])) == digest(big)
    assert calls == []


def test_only_a_process_that_opted_in_compiles(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **k: calls.append(fn) or fn)
    monkeypatch.setattr(core, "_compiled", None)
    monkeypatch.setattr(core, "_compiled_failed", False)
    monkeypatch.setattr(core, "inductor_supports", lambda device_type: True)  # as on a GPU
    words = _random(torch.int32, 1 << 17, 5)
    monkeypatch.setattr(core, "_compile_allowed", False)  # a training job
    assert core._compiled_sums(words) is None and calls == []
    monkeypatch.setattr(core, "_compile_allowed", True)  # a sweep worker
    assert [int(v) for v in core._compiled_sums(words)] == [int(v) for v in eager_digest_sums(words)]
    assert calls == [core._fused]


def test_float_stats_computes_on_the_host_what_the_backend_lacks(testdev):
    values = torch.randn(10_000, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    values[17] = float("nan")
    values[99] = float("-inf")
    with pytest.raises(NotImplementedError):
        values.to(testdev[0]).abs()  # the gap: float64 abs is not implemented on testdev
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        cpu = values.to(dtype)
        assert float_stats(cpu.to(testdev[1])) == float_stats(cpu)
    assert float_stats(values.to(testdev[0])).nonfinite == 2
