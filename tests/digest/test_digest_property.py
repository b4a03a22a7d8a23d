"""A single flipped bit anywhere in an output changes its digest, for every dtype (hypothesis)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sdc.digest import digest
from sdc.faults import flip_bit

DTYPES = [
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
    torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128,
]
FLOAT8 = [d for d in (getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None)) if d is not None]


def _tensor(dtype: torch.dtype, numel: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (numel * torch.empty((), dtype=dtype).element_size(),), generator=gen, dtype=torch.uint8)
    if dtype == torch.bool:
        return raw % 2 == 1
    return raw.view(dtype)


@settings(max_examples=300, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES + FLOAT8),
    numel=st.integers(1, 3000),
    seed=st.integers(0, 2**31),
    where=st.floats(0, 1, exclude_max=True),
    bit_fraction=st.floats(0, 1, exclude_max=True),
)
def test_one_flipped_bit_changes_the_digest(dtype, numel, seed, where, bit_fraction):
    tensor = _tensor(dtype, numel, seed)
    index = int(where * numel)
    width = 1 if dtype == torch.bool else 8 * tensor.element_size()
    flipped = flip_bit(tensor.clone(), index, int(bit_fraction * width))
    assert digest(flipped) != digest(tensor)


@settings(max_examples=100, deadline=None)
@given(dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.int8]), numel=st.integers(2, 2000), seed=st.integers(0, 2**31))
def test_two_swapped_elements_change_the_digest(dtype, numel, seed):
    tensor = _tensor(dtype, numel, seed)
    words = tensor.view(torch.uint8) if dtype == torch.int8 else tensor
    i, j = 0, numel - 1
    if bool((words[i : i + 1].view(torch.uint8) == words[j : j + 1].view(torch.uint8)).all()):
        return  # equal elements: a swap changes nothing
    swapped = tensor.clone()
    swapped[i], swapped[j] = tensor[j], tensor[i]
    assert digest(swapped) != digest(tensor)
