"""The fast digest paths give exactly the reference (eager) values; bucket fingerprints
equal the digest of the concatenated tensors; corruption always changes the digest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sdc.digest.core as fingerprint
from sdc.digest import (
    bucket_sums,
    combine_sums,
    digest_sums,
    eager_digest_sums,
    integer_words,
    plan_buckets,
    tensor_sums,
    word_count,
)
from sdc.digest import native as _digest_native

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int8, torch.uint8, torch.bool, torch.int64, torch.complex64]
# Sizes around the vector widths, the 128-vector blocks of the 16-bit kernel, and the
# thread split (PARALLEL_MIN_WORDS) so every tail and seam is exercised.
SIZES = [0, 1, 7, 15, 16, 17, 2047, 2048, 2049, 4099, (1 << 20) + 13]


def _random(dtype: torch.dtype, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (n * torch.empty((), dtype=dtype).element_size(),), generator=g, dtype=torch.uint8)
    if dtype == torch.bool:
        return raw.bool()
    return raw.view(dtype)


def _pair(t: torch.Tensor) -> tuple[int, int]:
    a, b = digest_sums(t)
    return int(a), int(b)


def _eager(t: torch.Tensor) -> tuple[int, int]:
    a, b = eager_digest_sums(t)
    return int(a), int(b)


def test_native_kernel_is_built_with_the_package():
    assert _digest_native.available(), "the CPU digest kernel should have been built by pip install (setup.py)"
    assert Path(_digest_native.library_path()).parent == Path(_digest_native.__file__).parent
    assert _digest_native.instruction_set() in ("avx512", "avx2", "plain")


def test_nothing_is_compiled_at_first_use(tmp_path):
    # A fresh process digests with the kernel and writes nothing to the user's cache.
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path), "CC": "/nonexistent/cc"}
    code = "import torch; from sdc.digest import native, digest; digest(torch.arange(1 << 21)); print(native.available())"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.stdout.strip() == "True", run.stderr
    assert not (tmp_path / "cache").exists() and list(tmp_path.iterdir()) == []


ISA_CHECK = """
import sys, torch
from sdc.digest import native, eager_digest_sums
from sdc.digest.core import integer_words
g = torch.Generator().manual_seed(4)
for dtype in (torch.uint8, torch.int16, torch.int32):
    for n in (0, 1, 15, 16, 17, 31, 33, 2047, 2049, 16 * 128 * 3 + 5, (1 << 20) + 13):
        raw = torch.randint(0, 256, (n * torch.empty((), dtype=dtype).element_size(),), generator=g, dtype=torch.uint8)
        words = integer_words(raw.view(dtype))
        want = tuple(int(v) & (2**64 - 1) for v in eager_digest_sums(words))
        assert native.word_sums(words) == want, (dtype, n)
    for value in (-(1 << 31), (1 << 31) - 1) if dtype == torch.int32 else (-(1 << 15), (1 << 15) - 1) if dtype == torch.int16 else (255,):
        words = torch.full(((1 << 21) + 3,), value, dtype=dtype)
        assert native.word_sums(words) == tuple(int(v) & (2**64 - 1) for v in eager_digest_sums(words))
print(native.instruction_set())
"""


@pytest.mark.parametrize("cap", ["plain", "avx2", ""])
def test_every_loop_the_cpu_runs_gives_the_reference(cap):
    # The loop is chosen at run time from this CPU; SDC_DIGEST_ISA caps it so each is tested.
    run = subprocess.run([sys.executable, "-c", ISA_CHECK], env={**os.environ, "SDC_DIGEST_ISA": cap},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    chosen = run.stdout.strip()
    if cap == "plain":
        assert chosen == "plain"
    elif cap == "avx2":
        assert chosen in ("avx2", "plain")
    else:
        assert chosen == _digest_native.instruction_set()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", SIZES)
def test_fast_path_equals_reference(dtype, n):
    for seed in range(3):
        t = _random(dtype, n, seed)
        assert _pair(t) == _eager(t)


def test_extreme_words_wrap_like_the_reference():
    # All-ones and all-minimum words maximise every accumulator the kernels keep.
    for dtype, value in [(torch.int32, -(1 << 31)), (torch.int32, (1 << 31) - 1), (torch.int16, -(1 << 15)), (torch.int16, (1 << 15) - 1)]:
        for n in (16 * 128 * 3 + 5, (1 << 21) + 3):
            t = torch.full((n,), value, dtype=dtype)
            assert _pair(t) == _eager(t)
    t = torch.full(((1 << 21) + 1,), 255, dtype=torch.uint8)
    assert _pair(t) == _eager(t)


def test_non_contiguous_and_multithreaded_counts_agree():
    base = _random(torch.float32, 3 << 20, 9).reshape(1024, -1)
    view = base.t()
    assert _pair(view) == _eager(view)
    old = torch.get_num_threads()
    try:
        results = set()
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.add(_pair(base))
        assert results == {_eager(base)}
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_single_bit_flip_changes_the_digest(dtype):
    t = _random(dtype, 5000, 1)
    reference = fingerprint.digest(t)
    words = integer_words(t.clone())
    bits = words.element_size() * 8
    g = torch.Generator().manual_seed(2)
    for _ in range(200):
        index = int(torch.randint(0, words.numel(), (1,), generator=g))
        bit = int(torch.randint(0, bits, (1,), generator=g))
        flipped = integer_words(t.clone())
        flipped[index] ^= (1 << bit) if bit < bits - 1 else -(1 << bit)
        assert fingerprint.digest(flipped.view(dtype)) != reference


def test_swapping_two_elements_changes_the_digest():
    t = torch.randn(10000)
    reference = _pair(t)
    g = torch.Generator().manual_seed(3)
    for _ in range(100):
        i, j = torch.randint(0, t.numel(), (2,), generator=g).tolist()
        if t[i] == t[j]:
            continue
        s = t.clone()
        s[i], s[j] = t[j], t[i]
        assert _pair(s) != reference


def test_bucket_sums_equal_digest_of_concatenation():
    named = [(f"p{i}", torch.randn(n)) for i, n in enumerate([10, 3000, 1, 70000, 513])]
    buckets = plan_buckets(named, bucket_bytes=4 * 5000)
    assert [b.names for b in buckets] == [("p0", "p1", "p2"), ("p3",), ("p4",)]
    per_tensor = tensor_sums([t for _, t in named])
    sums = bucket_sums(per_tensor, buckets)
    flat = {name: t for name, t in named}
    for bucket, row in zip(buckets, sums):
        joined = torch.cat([flat[name] for name in bucket.names])
        assert tuple(int(v) for v in row) == _eager(joined)
    everything = combine_sums(per_tensor, [word_count(t) for _, t in named])
    assert tuple(int(v) for v in everything) == _eager(torch.cat([t for _, t in named]))


def test_word_count_matches_integer_words():
    for dtype in DTYPES + [torch.complex128]:
        t = torch.zeros(7, dtype=dtype)
        assert word_count(t) == integer_words(t).numel()


def test_bad_bucket_size_is_refused():
    with pytest.raises(ValueError, match="bucket_bytes"):
        plan_buckets([("a", torch.zeros(1))], bucket_bytes=0)
