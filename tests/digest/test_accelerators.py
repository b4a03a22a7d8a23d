"""The accelerator digest paths (Triton kernel, compiled, eager on the device) give exactly the
CPU reference's values.

On a machine with a GPU these run the real kernels. Without one, the Triton kernel still runs
here under Triton's interpreter (``TRITON_INTERPRET=1``, CPU tensors) when Triton is installed;
otherwise that test is skipped too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import sdc.digest.core as fingerprint
from sdc.digest import digest_sums, eager_digest_sums, integer_words
from sdc.digest import triton_kernel as _digest_triton

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int8, torch.uint8, torch.bool, torch.int64, torch.complex64]
# Around the Triton kernel's span (BLOCK * ITERS words), its masked tail, and the compiled
# path's 2**16 threshold.
SPAN = _digest_triton.BLOCK * _digest_triton.ITERS
SIZES = [1, 7, 1000, SPAN - 1, SPAN, SPAN + 1, 3 * SPAN + 11, (1 << 22) + 5]

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA/ROCm device here")


def _random(dtype: torch.dtype, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (n * torch.empty((), dtype=dtype).element_size(),), generator=g, dtype=torch.uint8)
    return raw.bool() if dtype == torch.bool else raw.view(dtype)


def _ints(pair) -> tuple[int, int]:
    return int(pair[0]), int(pair[1])


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", SIZES)
def test_device_paths_equal_the_cpu_reference(dtype, n):
    cpu = _random(dtype, n, seed=n)
    want = _ints(eager_digest_sums(cpu))
    gpu = cpu.cuda()
    words = integer_words(gpu)
    assert _ints(digest_sums(gpu)) == want
    assert _ints(_digest_triton.word_sums(words)) == want
    assert _ints(fingerprint._eager_sums(words)) == want
    if n >= 1 << 16:
        fingerprint.allow_compile()  # as a sweep worker does; off in training processes
        compiled = fingerprint._compiled_sums(words)
        assert compiled is not None, "torch.compile should work on this GPU"
        assert _ints(compiled) == want


@needs_gpu
def test_extreme_words_on_the_device():
    # Minimum and maximum words fill the int32 accumulators of the narrow path to their bound.
    for dtype, value in [(torch.int16, -(1 << 15)), (torch.int16, (1 << 15) - 1), (torch.int32, -(1 << 31)), (torch.uint8, 255)]:
        cpu = torch.full((5 * SPAN + 3,), value, dtype=dtype)
        assert _ints(digest_sums(cpu.cuda())) == _ints(eager_digest_sums(cpu))


@needs_gpu
def test_a_flipped_bit_on_the_device_changes_the_digest():
    x = torch.randn(1 << 20, device="cuda")
    before = _ints(digest_sums(x))
    g = torch.Generator().manual_seed(1)
    for _ in range(32):
        index = int(torch.randint(0, x.numel(), (1,), generator=g))
        bit = int(torch.randint(0, 32, (1,), generator=g))
        words = x.view(torch.int32)
        words[index] ^= 1 << bit if bit < 31 else -(1 << 31)
        assert _ints(digest_sums(x)) != before
        words[index] ^= 1 << bit if bit < 31 else -(1 << 31)
        assert _ints(digest_sums(x)) == before


@needs_gpu
def test_non_contiguous_device_tensor_digests_like_its_contiguous_copy():
    x = torch.randn(513, 1027, device="cuda").t()
    assert fingerprint.digest(x) == fingerprint.digest(x.contiguous()) == fingerprint.digest(x.cpu())


_INTERPRETED = textwrap.dedent(
    """
    import torch
    from sdc.digest import triton_kernel as _digest_triton
    from sdc.digest import eager_digest_sums, integer_words
    span = _digest_triton.BLOCK * _digest_triton.ITERS
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16, torch.uint8, torch.float64):
        for n in (1, 1000, span, span + 1, 2 * span + 7):
            raw = torch.randint(0, 256, (n * torch.empty((), dtype=dtype).element_size(),), generator=g, dtype=torch.uint8)
            x = raw.view(dtype)
            got = [int(v) for v in _digest_triton.word_sums(integer_words(x))]
            want = [int(v) for v in eager_digest_sums(x)]
            assert got == want, (dtype, n, got, want)
    full = torch.full((span + 3,), -(1 << 15), dtype=torch.int16)
    assert [int(v) for v in _digest_triton.word_sums(full)] == [int(v) for v in eager_digest_sums(full)]
    print("ok")
    """
)


def test_triton_kernel_under_the_interpreter():
    try:
        import numpy  # noqa: F401  (the interpreter needs it)
        import triton  # noqa: F401
    except ImportError:
        pytest.skip("Triton is not installed here (the CPU build of torch does not bring it)")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", _INTERPRETED], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")
