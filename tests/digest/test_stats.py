"""Float statistics beside the digest: how much values differ, with non-finite values counted apart."""

import math

import torch

from sdc.digest import float_stats


def test_float_stats_sum_squares_absmax_and_nonfinite_count():
    t = torch.tensor([1.5, -4.0, float("nan"), 2.0, float("inf"), -float("inf")], dtype=torch.bfloat16)
    stats = float_stats(t)
    assert stats.nonfinite == 3
    assert stats.sum == -0.5 and stats.sum_sq == 1.5**2 + 16.0 + 4.0 and stats.abs_max == 4.0


def test_float_stats_accumulate_in_fp64():
    # 2**25 + 1 is not an fp32 number: summed in fp32 the 1 is lost (torch.sum gives 0 here).
    t = torch.tensor([2.0**25, 1.0, -(2.0**25)], dtype=torch.float32)
    assert float(t.sum()) == 0.0
    assert float_stats(t).sum == 1.0
    assert float_stats(torch.tensor([3, -7], dtype=torch.int32)).abs_max == 7.0
    assert math.isclose(float_stats(torch.zeros(0)).abs_max, 0.0)
