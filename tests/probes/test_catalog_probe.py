"""The catalog probe: replaying harvested cases on a chip, judged against fp64 by the tolerance table."""

from __future__ import annotations

import pytest
import torch

from probes.catalog import build_catalog, write_catalog
from probes.catalog_probe import CatalogProbe, make_inputs
from probes.harness import set_deterministic
from probes.harvest import harvest
from sdc.faults import FaultInjector, parse_faults
from sdc.node.devices import discover
from sdc.sweep.worker import run_case

transformers = pytest.importorskip("transformers")
CPU = discover("cpu:0")[0]


class ConvMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.fc = torch.nn.Linear(8 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(torch.nn.functional.gelu(self.conv(x)).flatten(1))


def _catalogs(dtype: str) -> list[dict]:
    from probes.harvest_models import harvest_catalog

    llama = transformers.LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=1,
                                     num_attention_heads=4, num_key_value_heads=2, vocab_size=500)
    gpt2 = transformers.GPT2Config(n_embd=64, n_layer=1, n_head=4, vocab_size=500, n_positions=64)
    with torch.device("meta"):
        model = ConvMLP().to(getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dtype]))
        x = torch.empty(4, 3, 6, 6, dtype=model.fc.weight.dtype)
    conv = build_catalog(harvest(model, (x,)), {"name": "ConvMLP", "config_hash": "x"}, budget=500)
    return [harvest_catalog(c, batch=2, seq_len=16, dtype=dtype, budget=500) for c in (llama, gpt2)] + [conv]


def _probe(tmp_path, catalog: dict) -> CatalogProbe:
    write_catalog(catalog, tmp_path / "catalog.json")
    probe = CatalogProbe()
    probe.path = str(tmp_path / "catalog.json")
    return probe


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_a_healthy_cpu_passes_every_harvested_case_over_seeds(tmp_path, dtype):
    set_deterministic()
    torch.set_num_threads(1)
    for n, catalog in enumerate(_catalogs(dtype)):
        (tmp_path / str(n)).mkdir()
        probe = _probe(tmp_path / str(n), catalog)
        cases = probe.cases("quick")
        assert len(cases) == len(catalog["cases"])
        for case in cases:
            for seed in range(3):
                outcome = run_case(probe, case, CPU, seed, 2)
                assert outcome.status in ("ok", "skipped"), (case.params["op"], outcome.message)
                if outcome.status == "ok":
                    stats = outcome.telemetry["error_stats"]
                    assert stats["tolerance_row"].startswith(case.params["kernel_class"] + "/")
                    assert outcome.digest and outcome.distinct_repeat_digests == 1


def test_recorded_strides_are_replayed():
    params = {"id": "c000000000000", "inputs": [{"shape": [3, 4], "stride": [1, 3], "dtype": "fp32"},
                                                 {"shape": [2, 4], "stride": [0, 1], "dtype": "bf16"}]}
    a, b = make_inputs(params, 0, torch.device("cpu"))
    assert a.stride() == (1, 3) and b.stride() == (0, 1) and b.dtype == torch.bfloat16
    assert torch.equal(b[0], b[1])  # a broadcast operand really is one row
    again, _ = make_inputs(params, 0, torch.device("cpu"))
    assert torch.equal(a, again)


class MatMul(torch.nn.Module):
    def forward(self, a, b):
        return a @ b.t()  # b read transposed, as nn.Linear reads its weight


def _single_case(tmp_path, m: int, n: int, k: int) -> CatalogProbe:
    with torch.device("meta"):
        a, b = torch.empty(m, k), torch.empty(n, k)
    recording = harvest(MatMul(), (a, b), backward=False)
    return _probe(tmp_path, build_catalog(recording, {"name": "mm", "config_hash": "x"}, budget=10))


def test_a_large_gemm_is_checked_on_sampled_rows_and_catches_a_high_bit_flip(tmp_path):
    set_deterministic()
    probe = _single_case(tmp_path, 1024, 512, 512)  # 2^28 multiply-adds: reference on 64 rows
    (case,) = probe.cases("quick")
    ok = run_case(probe, case, CPU, 0, 2)
    assert ok.status == "ok" and ok.telemetry["error_stats"]["elements"] == 64 * 512
    # A flip in a high mantissa bit lands in a sampled row only sometimes: force every row.
    flips = FaultInjector("cpu:0", parse_faults(["cpu:0:bitflip:rate=1,sticky=1,bits=20-22"]))
    caught = 0
    for seed in range(20):
        outcome = run_case(probe, case, CPU, seed, 1, flips)
        caught += outcome.status == "mismatch"
    # 64 of 1024 rows are checked: the flipped element is seen about 1 time in 16; the cohort
    # digest sees every one. Over 20 seeds at least one must be caught and named by its row.
    assert caught >= 1


def test_a_high_bit_flip_in_a_small_gemm_breaks_the_accumulation_bound(tmp_path):
    set_deterministic()
    probe = _single_case(tmp_path, 32, 64, 128)
    (case,) = probe.cases("quick")
    flips = FaultInjector("cpu:0", parse_faults(["cpu:0:bitflip:rate=1,sticky=1,bits=22"]))
    for seed in range(10):
        outcome = run_case(probe, case, CPU, seed, 2, flips)
        assert outcome.status == "mismatch" and "gemm/fp32/*@builtin-v1" in outcome.message
    assert run_case(probe, case, CPU, 0, 2).status == "ok"


def test_lowprec_rounding_stays_consistent_but_breaks_exact_rows(tmp_path):
    set_deterministic()
    probe = _single_case(tmp_path, 32, 64, 128)
    (case,) = probe.cases("quick")
    lowprec = FaultInjector("cpu:0", parse_faults(["cpu:0:lowprec:bits=8"]))
    outcome = run_case(probe, case, CPU, 0, 3, lowprec)
    assert outcome.distinct_repeat_digests == 1  # the same answer every repeat: a precision loss, not noise
    healthy = run_case(probe, case, CPU, 0, 3)
    assert outcome.telemetry["error_stats"]["mean_rel_err"] > 10 * healthy.telemetry["error_stats"]["mean_rel_err"]
