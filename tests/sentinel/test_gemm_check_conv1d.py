"""GEMM checksums on HF ``Conv1D`` (GPT-2's linear layers, weight stored transposed): a tiny
GPT-2 built from a config (no download) has every Conv1D checked forward and backward; a
corrupted Conv1D output or input gradient is named by layer; healthy runs over many seeds, in
fp32 and bf16, never trip the bound."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from sdc.faults import Corruption, Timing
from sdc.sentinel import ReplicaSentinel, SentinelConfig
from sdc.sentinel import gemm_check
from sdc.sentinel.gemm_check import GemmChecks, is_hf_conv1d
from sdc.sentinel.inject import ComputeFault

transformers = pytest.importorskip("transformers")

VOCAB, SEQ = 96, 24
CONV1D_PER_BLOCK = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def tiny_gpt2(seed: int, n_layer: int = 2, init: float = 0.02, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_layer=n_layer, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=SEQ,
                                     initializer_range=init, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config).to(dtype)


def _train(model: nn.Module, steps: int, seed: int = 0, lr: float = 1e-3):
    """Every checkable layer on every step; AdamW so the weights move away from their init."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    config = SentinelConfig(gemm_check_every=1, gemm_check_layers=1000, audit_every=0, check_budget=0)
    events: list = []
    sentinel = ReplicaSentinel(model, optimizer, config=config, deliver=events.extend)
    g = torch.Generator().manual_seed(seed)
    verdicts = []
    for step in range(steps):
        ids = torch.randint(0, VOCAB, (8, SEQ), generator=g)
        optimizer.zero_grad()
        sentinel.on_step_begin(step, None)
        loss = model(input_ids=ids, labels=ids).loss
        sentinel.on_loss(loss)
        loss.backward()
        sentinel.on_grads_ready()
        optimizer.step()
        verdicts.append(sentinel.on_step_end(step))
    assert sentinel.errors == 0
    sentinel.close()
    return verdicts, events


def _named(verdicts) -> list[tuple[str, ...]]:
    return [s.params for v in verdicts if v.diagnosis == "divergence" for s in v.suspects]


def _failures(events) -> dict[int, set[tuple[str, str]]]:
    """Per step, the (layer, pass) pairs the stored gemm_check events say failed on rank 0."""
    out: dict[int, set[tuple[str, str]]] = {}
    for event in events:
        if event.kind == "gemm_check" and event.diagnosis == "divergence":
            out.setdefault(event.step, set()).update((f["layer"], f["pass"]) for f in event.details["failures"]["0"])
    return out


def test_every_conv1d_of_gpt2_is_a_checked_layer():
    model = tiny_gpt2(0)
    names = [n for n, _ in GemmChecks(model).linears]
    expected = [f"transformer.h.{b}.{c}" for b in range(2) for c in CONV1D_PER_BLOCK] + ["lm_head"]
    assert names == expected
    # a Conv1D that is not HF's (by module) and torch's own nn.Conv1d are not GEMM layers
    local = type("Conv1D", (nn.Module,), {})
    assert not is_hf_conv1d(local()) and not is_hf_conv1d(nn.Conv1d(2, 2, 1))
    subclass = type("MyConv1D", (transformers.pytorch_utils.Conv1D,), {})
    assert is_hf_conv1d(subclass(4, 3))


def test_the_sentinel_does_not_import_transformers():
    code = "import sys, sdc.sentinel, sdc.sentinel.gemm_check; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("layer,corruption", [
    ("transformer.h.0.attn.c_attn", Corruption("bitflip", index=41, bit=27)),
    ("transformer.h.1.mlp.c_fc", Corruption("multibit", index=300, bit=26, bits=3)),
    ("transformer.h.0.mlp.c_proj", Corruption("sign", index=17)),
    ("transformer.h.1.attn.c_proj", Corruption("scale", index=5, factor=1.5)),
    ("transformer.h.0.attn.c_proj", Corruption("warp", index=3, bit=22)),
])
def test_a_corrupted_conv1d_forward_gemm_is_named(layer, corruption):
    model = tiny_gpt2(1)
    fault = ComputeFault(model.get_submodule(layer), corruption, Timing("persistent"))
    fault.arm()
    verdicts, events = _train(model, steps=4)
    assert fault.fired >= 4
    assert _named(verdicts) == [(layer,)] * 4  # every step, that layer only
    assert _failures(events) == {step: {(layer, "forward")} for step in range(4)}


@pytest.mark.parametrize("layer", ["transformer.h.0.attn.c_attn", "transformer.h.1.mlp.c_proj"])
def test_a_corrupted_conv1d_backward_gemm_is_named(layer):
    """One element of the layer's input gradient (dX = dY Wᵀ, inside its own addmm node) wrong;
    the layers upstream receive the wrong gradient but compute consistently with it."""
    model = tiny_gpt2(2)
    upset = Corruption("bitflip", index=123, bit=28)

    def plant(module, inputs, output):
        node = output.grad_fn.next_functions[0][0]  # through Conv1D's view of the output
        assert node.name().startswith("AddmmBackward")
        node.register_hook(lambda gi, go: (gi[0], upset.apply(gi[1]), gi[2]))

    model.get_submodule(layer).register_forward_hook(plant)  # before the checks' hooks
    verdicts, events = _train(model, steps=3)
    assert _named(verdicts) == [(layer,)] * 3
    assert _failures(events) == {step: {(layer, "backward")} for step in range(3)}


@pytest.mark.parametrize("dtype,seeds,init", [(torch.float32, range(8), 0.02), (torch.float32, range(8, 12), 0.3),
                                              (torch.bfloat16, range(4), 0.02)])
def test_healthy_gpt2_runs_pass_every_checksum(dtype, seeds, init, monkeypatch):
    """Many seeds, every layer checked both ways on every step, weights moving (AdamW) and, in
    one case, a wide init whose activations are large: no alarm, and every check really ran."""
    gaps: list[float] = []
    real = gemm_check.checksum_gap

    def recorded(*args, **kwargs):
        gaps.append(real(*args, **kwargs))
        return gaps[-1]

    monkeypatch.setattr(gemm_check, "checksum_gap", recorded)
    steps = 20
    for seed in seeds:
        verdicts, _ = _train(tiny_gpt2(seed, init=init, dtype=dtype), steps=steps, seed=seed)
        assert all(v.ok for v in verdicts), [v.diagnosis for v in verdicts if not v.ok]
    # 9 layers (8 Conv1D + lm_head), each forward and backward (every input needs a gradient)
    assert len(gaps) == len(seeds) * steps * 9 * 2
    assert max(gaps) < 1.0
