"""Bit-exact tensor digests computed on the tensor's own device, plus float statistics.

A digest reinterprets the tensor's bytes as integers and takes two sums modulo 2**64:
a plain sum (any single flipped bit changes it by ±2**b, never 0 mod 2**64) and a
position-weighted sum (two swapped elements change it). Integer addition modulo 2**64 is
associative and commutative, so the result does not depend on how the device orders its
reduction — the same bytes give the same digest on every chip and every backend.

Words are at most 32 bits wide (8-byte dtypes are split into two int32 words) so that for
any tensor under 2**31 elements a swap changes the weighted sum by (a-b)*(i-j), which is
non-zero and below 2**64 in magnitude, hence never cancels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

CHUNK_ELEMENTS = 1 << 24  # bounds the int64 temporaries to 128 MiB per chunk

_WORD_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int32}


def integer_words(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as a flat integer tensor of words of at most 32 bits."""
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    return flat.view(_WORD_VIEW[flat.element_size()])


def digest_sums(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(plain sum, position-weighted sum) of the integer words, as int64 tensors on the device.

    Stays on the device: callers that compare across ranks reduce these without a host sync.
    """
    words = integer_words(tensor)
    total = torch.zeros((), dtype=torch.int64, device=words.device)
    weighted = torch.zeros((), dtype=torch.int64, device=words.device)
    for start in range(0, words.numel(), CHUNK_ELEMENTS):
        chunk = words[start : start + CHUNK_ELEMENTS].to(torch.int64)
        positions = torch.arange(start + 1, start + 1 + chunk.numel(), dtype=torch.int64, device=words.device)
        total += chunk.sum()
        weighted += (chunk * positions).sum()
    return total, weighted


def digest(tensor: torch.Tensor) -> str:
    """Hex digest of a tensor's exact bytes, dtype and shape (32 hex characters)."""
    total, weighted = digest_sums(tensor)
    header = f"{tensor.dtype}|{tuple(tensor.shape)}|{int(total) & 0xFFFFFFFFFFFFFFFF:016x}|{int(weighted) & 0xFFFFFFFFFFFFFFFF:016x}"
    return hashlib.blake2b(header.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class FloatStats:
    """Float statistics: where a digest says *that* values differ, these say *how much*."""

    sum: float
    sum_sq: float
    abs_max: float
    nonfinite: int


def float_stats(tensor: torch.Tensor) -> FloatStats:
    values = tensor.detach().reshape(-1)
    if not values.is_floating_point():
        values = values.to(torch.float64)
    finite = torch.isfinite(values)
    nonfinite = int((~finite).sum())
    clean = torch.where(finite, values, torch.zeros((), dtype=values.dtype, device=values.device)).to(torch.float64)
    return FloatStats(
        sum=float(clean.sum()),
        sum_sq=float((clean * clean).sum()),
        abs_max=float(clean.abs().max()) if clean.numel() else 0.0,
        nonfinite=nonfinite,
    )
