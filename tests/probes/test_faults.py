"""Fault injection: the spec strings users type, and flip_bit on every dtype."""

import pytest
import torch

from sdc.faults import (
    FaultInjector,
    FaultSpecError,
    flip_bit,
    parse_fault,
    parse_faults,
)

ALL_DTYPES = [
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64,
]


def test_parse_cli_and_environment():
    faults = parse_faults(["cpu:2:bitflip:rate=0.05,bits=0-22"], environ={"SDC_INJECT": "cpu:1:hang:probe=gemm;cpu:0:slowdown:factor=2"})
    assert [(f.chip, f.kind) for f in faults] == [("cpu:2", "bitflip"), ("cpu:1", "hang"), ("cpu:0", "slowdown")]
    assert faults[0].params == {"rate": 0.05, "bits": "0-22"}
    assert faults[1].applies("gemm", "square") and not faults[1].applies("memory", "patterns")


@pytest.mark.parametrize(
    "text, words",
    [
        ("cpu:2", "CHIP:KIND"),
        ("cpu:2:melt", "unknown fault kind 'melt'"),
        ("cpu:2:bitflip:rate=2", "rate must be between 0 and 1"),
        ("cpu:2:bitflip:speed=2", "KEY one of"),
        ("cpu:2:slowdown:factor=abc", "not a valid float"),
        ("cpu:2:slowdown:factor=0.5", "at least 1"),
    ],
)
def test_bad_specs_say_what_is_wrong(text, words):
    with pytest.raises(FaultSpecError, match=words):
        parse_fault(text)


def _bytes(t: torch.Tensor) -> torch.Tensor:
    t = torch.view_as_real(t) if t.is_complex() else t
    return t.contiguous().reshape(-1).view(torch.uint8)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_flip_bit_changes_exactly_one_bit_and_flips_back(dtype):
    original = (torch.arange(12) % 3).to(dtype).reshape(3, 4)
    width = 1 if dtype == torch.bool else 8 * original.element_size()
    for bit in {0, width - 1}:
        changed = flip_bit(original.clone(), 5, bit)
        difference = _bytes(changed) ^ _bytes(original)
        assert sum(bin(int(b)).count("1") for b in difference) == 1
        size = original.element_size()
        assert int(difference[5 * size : 6 * size].sum()) != 0, "the flip is in element 5"
        assert torch.equal(_bytes(flip_bit(changed, 5, bit)), _bytes(original))


def test_flip_bit_rejects_out_of_range():
    with pytest.raises(ValueError, match="outside"):
        flip_bit(torch.zeros(4, dtype=torch.float16), 0, 16)
    with pytest.raises(IndexError):
        flip_bit(torch.zeros(4), 4, 0)


def test_injector_is_reproducible_and_limited_to_its_chip():
    fault = parse_fault("cpu:1:bitflip:rate=1")
    out = torch.ones(1000)
    first = FaultInjector("cpu:1", [fault]).corrupt(out, "gemm", "square", 0)
    again = FaultInjector("cpu:1", [fault]).corrupt(out, "gemm", "square", 0)
    assert torch.equal(first, again) and not torch.equal(first, out)
    assert torch.equal(out, torch.ones(1000)), "the chip's output must not be corrupted in place"
    assert FaultInjector("cpu:0", [fault]).corrupt(out, "gemm", "square", 0) is out


def test_error_fault_raises():
    injector = FaultInjector("cpu:0", [parse_fault("cpu:0:error:probe=gemm")])
    with pytest.raises(RuntimeError, match="injected"):
        injector.before("gemm", "square")
    injector.before("memory", "patterns")  # other probes unaffected
