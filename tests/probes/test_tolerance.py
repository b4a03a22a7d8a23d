"""The tolerance table: every shipped row just inside and just outside its bound; lookup; overrides."""

from __future__ import annotations

import pytest
import torch

from probes.tolerance import (
    ToleranceError,
    builtin_table,
    check,
    element_bound,
    load_table,
    rounded,
    ulp_of,
)

TABLE = builtin_table()


def _dtype_of(row) -> str:
    return "fp32" if row.dtype == "*" else row.dtype


def _reference(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(4096, generator=g, dtype=torch.float64) * 3
    ref[:8] = torch.tensor([0.0, 1e-9, -1e-9, 1e-5, 1.0, -2.0, 100.0, 1e-30], dtype=torch.float64)
    return ref


@pytest.mark.parametrize("row", TABLE.rows, ids=lambda r: r.row_id)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_row_passes_just_inside_and_fails_just_outside_its_bound(row, seed):
    dtype = _dtype_of(row)
    ref = _reference(seed)
    if row.rule == "exact":
        inside = rounded(ref, dtype)
        outside = inside.clone()
        outside[100] += ulp_of(outside[100:101], dtype)[0]  # one ulp off, in one element
    else:
        k = 512
        magnitude = ref.abs() * 2 + 0.1
        bound = element_bound(row, ref, dtype, k, magnitude)
        sign = torch.where(torch.arange(ref.numel()) % 2 == 0, 1.0, -1.0).to(torch.float64)
        inside = ref + sign * 0.9 * bound
        outside = inside.clone()
        # fp64 rows: 1.1 ulp steps are not representable in fp64 itself; 1.5 is.
        outside[100] = ref[100] + (1.5 if dtype == "fp64" else 1.1) * bound[100]
    kwargs = {} if row.rule == "exact" else {"k": 512, "magnitude": ref.abs() * 2 + 0.1}
    ok = check(row, inside, ref, dtype, **kwargs)
    assert ok.passed, ok.message
    assert ok.row_id == row.row_id and ok.worst_ratio <= 1.0
    bad = check(row, outside, ref, dtype, **kwargs)
    assert not bad.passed
    assert bad.worst_index == 100 and row.row_id in bad.message
    assert bad.share_over == pytest.approx(1 / ref.numel())


def test_non_finite_results_must_match_exactly():
    row = TABLE.lookup("gemm", "fp32")
    ref = torch.tensor([1.0, float("inf"), float("nan")], dtype=torch.float64)
    assert check(row, ref.clone(), ref, "fp32").passed
    assert not check(row, torch.tensor([float("nan"), float("inf"), float("nan")]), ref, "fp32").passed
    assert not check(row, torch.tensor([1.0, 1e30, float("nan")]), ref, "fp32").passed


def test_lookup_prefers_vendor_then_dtype_then_wildcard():
    assert TABLE.lookup("gemm", "fp32", "cuda").vendor == "cuda"
    assert TABLE.lookup("gemm", "fp32", "cpu").vendor == "*"
    assert TABLE.lookup("arith", "bf16").dtype == "*"
    assert TABLE.lookup("gemm", "int8") is None


def test_config_rows_override_shipped_ones_and_are_named_as_such():
    table = load_table([{"op_class": "gemm", "dtype": "bf16", "vendor": "npu", "rule": "accumulate", "factor": 8}])
    row = table.lookup("gemm", "bf16", "npu")
    assert row.source == "config" and row.factor == 8 and row.row_id == "gemm/bf16/npu@config"
    assert table.lookup("gemm", "bf16", "cuda").source == "builtin-v1"
    same_key = load_table([{"op_class": "arith", "dtype": "*", "rule": "ulp", "ulp": 1}])
    assert same_key.lookup("arith", "fp32").source == "config"


def test_relative_rule_allows_its_share_of_elements_over():
    (row,) = load_table([{"op_class": "custom", "dtype": "fp32", "rule": "relative", "rtol": 1e-3,
                          "share_allowed": 0.001}]).rows[-1:]
    ref = torch.ones(10_000, dtype=torch.float64)
    out = ref.clone()
    out[:10] += 2e-3  # 0.1% of elements at twice the relative tolerance: allowed
    assert check(row, out, ref, "fp32").passed
    out[:11] += 2e-3
    assert not check(row, out, ref, "fp32").passed


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"op_class": "gemm", "dtype": "bf16"}, "rule"),
        ({"op_class": "gemm", "dtype": "bf16", "rule": "fuzzy"}, "rule must be one of"),
        ({"op_class": "gemm", "dtype": "bf16", "rule": "ulp", "ulp": -1}, "'ulp' must be a finite number"),
        ({"op_class": "gemm", "dtype": "bf16", "rule": "ulp", "tolerance": 1}, "unknown field"),
        ({"op_class": "gemm", "dtype": "bf16", "rule": "accumulate", "accumulate": "fp7"}, "accumulate must be"),
    ],
)
def test_bad_override_rows_are_refused_with_the_field_named(bad, message):
    with pytest.raises(ToleranceError, match=message):
        load_table([bad])


def test_error_statistics_describe_the_distribution():
    row = TABLE.lookup("transcendental", "bf16")
    ref = torch.linspace(1, 2, 1000, dtype=torch.float64)
    result = check(row, rounded(ref, "bf16"), ref, "bf16")
    stats = result.stats()
    assert stats["tolerance_row"] == row.row_id and stats["elements"] == 1000
    assert stats["max_ulp"] <= 0.5 and sum(stats["ulp_histogram"]) == 1000
    assert 0 < stats["mean_rel_err"] < stats["max_rel_err"] <= 2**-8
