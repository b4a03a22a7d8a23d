"""Pure decisions: majority vote, norm outliers, loss spikes, config validation, bit flips."""

from __future__ import annotations

import math

import pytest
import torch

from sdc.sentinel import SentinelConfig, SentinelConfigError
from sdc.sentinel.inject import flip_bit
from sdc.sentinel.checks import norm_outliers
from sdc.sentinel.losses import LossTracker
from sdc.sentinel.vote import majority_vote, worst


def test_minority_replica_is_named_with_its_parameters():
    fps = [[1, 2], [1, 2], [1, 9], [1, 2]]
    result = majority_vote(fps, ["a", "b"])
    assert result.diagnosis == "divergence"
    assert result.minority == {2: ("b",)}
    assert result.majority_replica == 0


@pytest.mark.parametrize("fps", [[[1], [2]], [[1], [1], [2], [2]]])
def test_no_strict_majority_is_unattributed(fps):
    result = majority_vote(fps, ["w"])
    assert result.diagnosis == "unattributed"
    assert result.minority == {} and result.unattributed == ("w",)
    assert result.majority_replica is None


def test_agreement_is_ok():
    assert majority_vote([[5, 6]] * 3, ["a", "b"]).diagnosis == "ok"


def test_norm_outliers_need_three_ranks_and_catch_nonfinite():
    assert norm_outliers([1.0, 1.1, 0.9, 500.0], ratio=50) == [3]
    assert norm_outliers([1.0, 1.1, 0.9, 1.2], ratio=50) == []
    assert norm_outliers([1.0, math.inf], ratio=50) == [1]
    assert norm_outliers([1.0, 500.0], ratio=50) == []


def test_loss_spike_after_warmup_only_and_not_learnt():
    tracker = LossTracker(factor=10, warmup_steps=3)
    assert [tracker.check(v) for v in (100.0, 50.0, 1.0)] == [None, None, None]
    assert tracker.check(2000.0) == "loss_spike"
    assert tracker.check(2000.0) == "loss_spike"
    assert tracker.check(float("nan")) == "nonfinite_loss"
    assert tracker.check(90.0) is None


def test_worst_orders_diagnoses():
    assert worst(["ok", "correct", "transient", "unattributed"]) == "transient"
    assert worst([]) == "ok"


@pytest.mark.parametrize("kwargs, field", [({"action": "reboot"}, "action"), ({"grad_every": -1}, "grad_every"), ({"loss_spike_factor": 1.0}, "loss_spike_factor")])
def test_bad_config_names_the_setting(kwargs, field):
    with pytest.raises(SentinelConfigError, match=field):
        SentinelConfig(**kwargs)


def test_config_from_table_refuses_unknown_keys():
    assert SentinelConfig.from_mapping({"grad_every": 3}).grad_every == 3
    with pytest.raises(SentinelConfigError, match="grad_evry"):
        SentinelConfig.from_mapping({"grad_evry": 3})


@pytest.mark.parametrize("dtype, bit", [(torch.float32, 31), (torch.float32, 0), (torch.bfloat16, 15), (torch.float64, 63), (torch.int8, 7)])
def test_flip_bit_flips_exactly_one_bit_and_back(dtype, bit):
    t = torch.ones(10).to(dtype)
    before = t.clone()
    flip_bit(t, 4, bit)
    changed = (t != before).nonzero().flatten().tolist()
    assert changed == [4]
    flip_bit(t, 4, bit)
    assert torch.equal(t, before)
    with pytest.raises(ValueError, match="bit"):
        flip_bit(t, 0, t.element_size() * 8)


def test_late_loss_spike_is_seen_against_the_recent_median():
    """Losses fall from 100 to ~1; a jump to 50 is 20x the recent losses (a running maximum
    since step 0, at 100, would never see it)."""
    tracker = LossTracker(factor=10, warmup_steps=5, window=20)
    falling = [100.0 * 0.9**i for i in range(45)]
    assert all(tracker.check(v) is None for v in falling)
    assert tracker.check(50.0) == "loss_spike"
    assert tracker.check(falling[-1]) is None


def test_a_3x_gradient_norm_outlier_is_named_at_the_default_ratio():
    ratio = SentinelConfig().grad_norm_ratio
    assert norm_outliers([1.0, 1.2, 0.9, 3.5], ratio) == [3]
    assert norm_outliers([1.0, 1.3, 0.8, 1.6], ratio) == []  # healthy spread between micro-batches
