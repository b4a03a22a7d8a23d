"""The accelerator fast path of ``sdc.digest``: one Triton kernel, one pass over memory.

Why not torch: ``x.view(torch.int32).sum(dtype=torch.int64)`` reads at a tenth of
``torch.sum``, and the compiled form of the fused sums goes through TorchDynamo's guards on
every call, which costs as much as the kernel on a fast chip. This kernel reads each word
once and multiplies nothing per element, using the same identity as the CPU kernel
(``sdc/digest/kernels/digest.c``): lane ``l`` of a program sees words w_0..w_{K-1}, one per
iteration; with running prefix sums P_k = w_0 + .. + w_k,

    sum_k P_k = sum_k (K - k) w_k,   so   sum_k k w_k = K * total - sum_k P_k,

two adds per element. Words of 8 or 16 bits keep both sums in int32: over ``ITERS`` = 64
iterations |P_k| <= 64 * 2**15 and |sum P_k| <= 2080 * 2**15 < 2**31, exact. 32-bit words use
int64. Each program adds its two int64 results into the output with an atomic add: integer
addition modulo 2**64 is commutative, so the order the programs finish in changes nothing.

Loaded only when Triton imports; ``available()`` is False otherwise and callers fall back.
"""

from __future__ import annotations

import torch

BLOCK = 1024  # lanes per program
ITERS = 64  # iterations per program: a program covers BLOCK * ITERS contiguous words

_kernel = None
_missing = False


def _load():
    """The jitted kernel, built on first use: importing Triton costs about a second."""
    global _kernel, _missing
    if _kernel is not None or _missing:
        return _kernel
    try:  # optional: present with CUDA and ROCm builds of torch, absent from the CPU build
        import triton
        import triton.language as tl
    except Exception:
        _missing = True
        return None

    @triton.jit
    def digest_kernel(words, out, start, n, WIDE: tl.constexpr, MASKED: tl.constexpr, BLOCK: tl.constexpr, ITERS: tl.constexpr):
        # Program p covers words [base, base + BLOCK * ITERS); positions are 1-based.
        base = start + tl.program_id(0).to(tl.int64) * (BLOCK * ITERS)
        lanes = tl.arange(0, BLOCK)
        if WIDE:
            acc = tl.zeros([BLOCK], dtype=tl.int64)
            pre = tl.zeros([BLOCK], dtype=tl.int64)
        else:
            acc = tl.zeros([BLOCK], dtype=tl.int32)
            pre = tl.zeros([BLOCK], dtype=tl.int32)
        for k in range(ITERS):
            offsets = base + k * BLOCK + lanes
            if MASKED:
                w = tl.load(words + offsets, mask=offsets < n, other=0)
            else:
                w = tl.load(words + offsets)
            # uint8 words zero-extend, int16 and int32 sign-extend, as in the other paths.
            acc += w.to(acc.dtype)
            pre += acc
        acc64 = acc.to(tl.int64)
        pre64 = pre.to(tl.int64)
        position = base + lanes.to(tl.int64) + 1  # of each lane's first word
        total = tl.sum(acc64, axis=0)
        weighted = tl.sum(position * acc64 + BLOCK * (ITERS * acc64 - pre64), axis=0)
        tl.atomic_add(out, total)
        tl.atomic_add(out + 1, weighted)

    _kernel = digest_kernel
    return _kernel


def available() -> bool:
    return _load() is not None


def word_sums(words: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(plain, weighted) sums mod 2**64 of a contiguous 1-D tensor of 1/2/4-byte words, on its device.

    ``out``: a zeroed contiguous int64 tensor of 2 elements to add them into (a row of a
    batch of fingerprints), instead of a new one.
    """
    kernel = _load()
    if kernel is None:
        raise RuntimeError("Triton is not installed")
    n = words.numel()
    if out is None:
        out = torch.zeros(2, dtype=torch.int64, device=words.device)
    span = BLOCK * ITERS
    whole = n // span
    wide = words.element_size() == 4
    # Full spans load without masks (so the loads vectorise); the ragged end gets one
    # masked program of its own.
    if whole:
        kernel[(whole,)](words, out, 0, n, WIDE=wide, MASKED=False, BLOCK=BLOCK, ITERS=ITERS, num_warps=8)
    if n > whole * span:
        kernel[(1,)](words, out, whole * span, n, WIDE=wide, MASKED=True, BLOCK=BLOCK, ITERS=ITERS, num_warps=8)
    return out[0], out[1]
