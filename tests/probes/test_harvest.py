"""Harvest: a model's own op shapes and dtypes, on the meta device, per tensor-parallel rank."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch

from probes.catalog import CatalogError, build_catalog, kernel_signature, read_catalog, write_catalog
from probes.harvest import harvest
from probes.harvest_models import HarvestError, harvest_catalog, load_hf_config

transformers = pytest.importorskip("transformers")

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "schema" / "catalog.json").read_text())


def llama(**overrides):
    values = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=1000)
    values.update(overrides)
    return transformers.LlamaConfig(**values)


def gpt2():
    return transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=500, n_positions=64)


def shapes(case):
    return [spec["shape"] for spec in case["inputs"]]


def cases_of(catalog, op):
    return [c for c in catalog["cases"] if c["op"] == op]


def test_llama_catalog_has_the_models_ops_shapes_and_dtypes():
    catalog = harvest_catalog(llama(), batch=2, seq_len=16, dtype="bf16", budget=500)
    jsonschema.validate(catalog, SCHEMA)
    ops = {c["op"] for c in catalog["cases"]}
    assert {"aten.mm.default", "sdc.scaled_dot_product_attention", "aten.embedding.default",
            "aten.silu.default", "aten.rsqrt.default", "aten._log_softmax.default"} <= ops
    # The MLP's projections in the forward: tokens (2*16) x hidden 64 -> intermediate 160,
    # with the weight read transposed (the nn.Linear layout).
    forward_mm = [c for c in cases_of(catalog, "aten.mm.default") if "forward" in c["phases"]]
    assert [[32, 64], [64, 160]] in [shapes(c) for c in forward_mm]
    up = next(c for c in forward_mm if shapes(c) == [[32, 64], [64, 160]])
    assert up["inputs"][1]["stride"] == [1, 64] and up["tile_class"].endswith(":NT")
    assert up["count"] == 4  # gate and up projection in each of the 2 layers
    # Attention at the real head split: 4 query heads, 2 key/value heads, head dim 16.
    (sdpa,) = cases_of(catalog, "sdc.scaled_dot_product_attention")
    assert shapes(sdpa) == [[2, 4, 16, 16], [2, 2, 16, 16], [2, 2, 16, 16]]
    assert {s["dtype"] for s in sdpa["inputs"]} == {"bf16"}
    # The backward ran too: weight gradients are mm's of the transposed activations.
    assert any("backward" in c["phases"] for c in cases_of(catalog, "aten.mm.default"))
    assert catalog["model"]["name"] == "LlamaForCausalLM" and catalog["model"]["config"]["hidden_size"] == 64


def test_gpt2_catalog_has_layer_norm_gelu_and_the_fused_qkv_gemm():
    catalog = harvest_catalog(gpt2(), batch=2, seq_len=16, dtype="fp32", budget=500)
    ops = {c["op"] for c in catalog["cases"]}
    assert {"aten.native_layer_norm.default", "aten.native_layer_norm_backward.default", "aten.tanh.default"} <= ops
    # Conv1D c_attn: x (32 x 64) @ W (64 x 192) + bias, as one addmm.
    assert [[192], [32, 64], [64, 192]] in [shapes(c) for c in cases_of(catalog, "aten.addmm.default")]
    assert all(s["dtype"] == "fp32" for c in catalog["cases"] for s in c["inputs"] if s["dtype"].startswith("fp"))


def test_tensor_parallel_two_gives_per_rank_shapes_and_all_reduces():
    whole = harvest_catalog(llama(), batch=2, seq_len=16, dtype="bf16", budget=500)
    rank = harvest_catalog(llama(), batch=2, seq_len=16, dtype="bf16", tp_size=2, budget=500)
    forward = {tuple(map(tuple, shapes(c))) for c in cases_of(rank, "aten.mm.default") if "forward" in c["phases"]}
    assert ((32, 64), (64, 80)) in forward  # gate/up: 160 columns split over 2 ranks
    assert ((32, 80), (80, 64)) in forward  # down: 160 rows split
    assert ((32, 64), (64, 160)) not in forward
    (sdpa,) = cases_of(rank, "sdc.scaled_dot_product_attention")
    assert shapes(sdpa)[0] == [2, 2, 16, 16]  # half the query heads on this rank
    reduces = {(c["op"], c["phase"], tuple(c["shape"])) for c in rank["collectives"]}
    assert ("all_reduce", "forward", (2, 16, 64)) in reduces and ("all_reduce", "backward", (2, 16, 64)) in reduces
    assert whole["collectives"] == [] and rank["model"]["tp_size"] == 2


def test_tensor_parallel_refuses_a_size_that_does_not_divide_or_a_model_without_a_plan():
    with pytest.raises(HarvestError, match="do not divide"):
        harvest_catalog(llama(), batch=1, seq_len=8, tp_size=3)
    with pytest.raises(HarvestError, match="no tensor-parallel plan"):
        harvest_catalog(gpt2(), batch=1, seq_len=8, tp_size=2)


class ConvMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.fc1 = torch.nn.Linear(8 * 6 * 6, 50)
        self.fc2 = torch.nn.Linear(50, 10)

    def forward(self, x):
        h = torch.nn.functional.gelu(self.conv(x)).flatten(1)
        return self.fc2(torch.relu(self.fc1(h)))


def test_mlp_with_a_conv_on_the_meta_device():
    with torch.device("meta"):
        model = ConvMLP()
        x = torch.empty(4, 3, 6, 6)
    catalog = build_catalog(harvest(model, (x,)), {"name": "ConvMLP", "config_hash": "x"}, budget=100)
    conv = cases_of(catalog, "aten.convolution.default")
    assert [shapes(c) for c in conv] == [[[4, 3, 6, 6], [8, 3, 3, 3], [8]]]
    assert conv[0]["args"][3:6] == [[1, 1], [1, 1], [1, 1]]  # stride, padding, dilation kept
    assert cases_of(catalog, "aten.convolution_backward.default")
    assert [[4, 288], [288, 50]] in [shapes(c)[1:] for c in cases_of(catalog, "aten.addmm.default")]
    assert cases_of(catalog, "aten.gelu.default")


def test_harvesting_a_large_config_on_meta_needs_no_real_memory(tmp_path):
    # ~5.6 billion parameters (11 GB in bf16): only a meta harvest fits in this test's memory.
    script = f"""
import resource, sys, transformers
from probes.harvest_models import harvest_catalog
from probes.catalog import write_catalog
cfg = transformers.LlamaConfig(hidden_size=8192, intermediate_size=28672, num_hidden_layers=4,
    num_attention_heads=64, num_key_value_heads=8, vocab_size=128256)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
catalog = harvest_catalog(cfg, batch=1, seq_len=4096, dtype="bf16", tp_size=8)
write_catalog(catalog, {str(tmp_path / 'big.json')!r})
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    grew = int(done.stdout.strip().splitlines()[-1])
    assert grew < 1 << 30, f"peak memory grew by {grew / 2**30:.1f} GiB"
    catalog = read_catalog(tmp_path / "big.json")
    assert [[4096, 8192], [8192, 3584]] in [shapes(c) for c in cases_of(catalog, "aten.mm.default")]


def test_compression_keeps_every_kernel_class_and_says_what_it_dropped():
    full = harvest_catalog(llama(), batch=2, seq_len=16, dtype="bf16", budget=10_000)
    small = harvest_catalog(llama(), batch=2, seq_len=16, dtype="bf16", budget=5)
    assert full["stats"]["dropped"] == 0 and small["stats"]["dropped"] > 0
    classes = {kernel_signature(c) for c in full["cases"]}
    assert {kernel_signature(c) for c in small["cases"]} == classes
    assert small["stats"]["kept"] == len(classes) and small["stats"]["over_budget"] == len(classes) - 5
    kept = {c["id"] for c in small["cases"]}
    assert len(small["dropped"]) + len(kept) == full["stats"]["distinct_cases"]
    assert all(d["represented_by"] in kept and d["id"] not in kept for d in small["dropped"])
    # With room to spare, the budget is filled by the most frequent of the remaining cases.
    medium = harvest_catalog(llama(), batch=2, seq_len=16, dtype="bf16", budget=len(classes) + 3)
    assert medium["stats"]["kept"] == len(classes) + 3


def test_catalog_round_trip_and_clear_errors(tmp_path):
    catalog = harvest_catalog(llama(), batch=1, seq_len=8, budget=20)
    write_catalog(catalog, tmp_path / "c.json")
    assert read_catalog(tmp_path / "c.json") == catalog
    (tmp_path / "bad.json").write_text('{"catalog_version": 1, "model": {}, "cases": [{"id": "x"}]}')
    with pytest.raises(CatalogError, match=r"bad.json: cases/0/op: must be a str"):
        read_catalog(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text('{"catalog_version": 7}')
    with pytest.raises(CatalogError, match="harvest it again"):
        read_catalog(tmp_path / "old.json")
    with pytest.raises(CatalogError, match="no such file"):
        read_catalog(tmp_path / "missing.json")


def test_hf_config_file_loads_offline(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "llama", **llama().to_diff_dict()}))
    assert load_hf_config(str(path)).hidden_size == 64
    path.write_text("{}")
    with pytest.raises(HarvestError, match="model_type"):
        load_hf_config(str(path))


def test_harvest_works_under_fake_tensor_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        model = ConvMLP()
        x = torch.empty(2, 3, 6, 6)
        recording = harvest(model, (x,))
    catalog = build_catalog(recording, {"name": "ConvMLP", "config_hash": "x"}, budget=100)
    assert [shapes(c) for c in cases_of(catalog, "aten.convolution.default")] == [[[2, 3, 6, 6], [8, 3, 3, 3], [8]]]
    assert cases_of(catalog, "aten.convolution_backward.default")
