"""Backward attention runs with deterministic kernels required: a kernel that has no
deterministic form makes the case an error (never a fault), and the sweep's own setting is
put back afterwards."""

import pytest
import torch

from probes.base import Case, Outcome, Probe
from probes.harness import set_deterministic, strict_determinism
from probes.registry import all_probes
from sdc.faults import parse_faults
from sdc.node.devices import discover
from sdc.sweep import SweepOptions, run_sweep


def _put_with_duplicates() -> torch.Tensor:
    # put_ has no deterministic implementation on the CPU: PyTorch alerts on it.
    return torch.zeros(5).put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]))


def test_strict_determinism_raises_inside_and_restores_the_sweep_setting():
    set_deterministic()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    with pytest.raises(RuntimeError, match="deterministic"):
        with strict_determinism():
            assert not torch.is_deterministic_algorithms_warn_only_enabled()
            _put_with_duplicates()
    # Restored even though the block raised; outside it the op only warns.
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    with pytest.warns(UserWarning, match="deterministic"):
        _put_with_duplicates()


class _StrictPut(Probe):
    name = "strictput"
    version = 1

    def cases(self, suite):
        return [Case("put", (5,), "fp32", {})]

    def run(self, case, device, seed, repeats, faults=None) -> Outcome:
        with strict_determinism():
            _put_with_duplicates()
        return Outcome(status="ok", repeats=repeats)


def test_a_kernel_without_a_deterministic_form_is_an_error_not_a_fault():
    records = []
    summary = run_sweep(discover("cpu:0"), [_StrictPut()], "quick", records.extend,
                        options=SweepOptions(faults=parse_faults([], environ={}), isolate=False, repeats=1))
    (result,) = [r for r in records if r.KIND == "probe_result"]
    assert result.status == "error"
    assert "deterministic" in result.message
    assert summary.exit_code == 2  # an error; 1 would mean a fault was found


def test_attention_backward_cases_stay_bit_identical_over_repeats_on_the_cpu():
    attention = all_probes()["attention"]
    backward = [c for c in attention.cases("quick") if c.params.get("backward")]
    assert backward
    for case in backward:
        outcome = attention.run(case, torch.device("cpu"), seed=3, repeats=3)
        assert outcome.status == "ok", outcome.message
        assert outcome.distinct_repeat_digests == 1
    assert torch.is_deterministic_algorithms_warn_only_enabled() or not torch.are_deterministic_algorithms_enabled()
