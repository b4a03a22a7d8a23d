"""Bit-exact tensor digests computed on the tensor's own device.

A digest reinterprets the tensor's bytes as integers and takes two sums modulo 2**64:
a plain sum (any single flipped bit changes it by ±2**b, never 0 mod 2**64) and a
position-weighted sum (two swapped elements change it). Integer addition modulo 2**64 is
associative and commutative, so the result does not depend on how the device orders its
reduction — the same bytes give the same digest on every chip and every backend.

Words are at most 32 bits wide (8-byte dtypes are split into two int32 words) so that for
any tensor under 2**31 elements a swap changes the weighted sum by (a-b)*(i-j), which is
non-zero and below 2**64 in magnitude, hence never cancels.

Four implementations give identical values: a one-pass C kernel on the CPU
(``sdc.digest.native``), a one-pass Triton kernel on accelerators Triton drives
(``sdc.digest.triton_kernel``: CUDA, ROCm, XPU), a torch.compile fused kernel for other
accelerators — tried only in processes that opted in (``allow_compile()``: sweep workers,
never a training job, where a first compile would stall a step) and only for device types
Inductor has a backend for (a PrivateUse1 plug-in without one failed after ~54 s) — and the
eager torch code below, which is correct everywhere and is the
reference the tests hold the others to. ``bucket_sums`` fingerprints groups of tensors (parameters,
gradients) as if each group were one concatenated tensor, without concatenating them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import Sequence

import torch

from sdc.digest import native as _digest_native
from sdc.digest import triton_kernel as _digest_triton

log = logging.getLogger(__name__)

CHUNK_ELEMENTS = 1 << 24  # bounds the int64 temporaries to 128 MiB per chunk
_WORD_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int32}
_SIGN = 1 << 63
_MOD = 1 << 64


def integer_words(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as a flat integer tensor of words of at most 32 bits."""
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    return flat.view(_WORD_VIEW[flat.element_size()])


def word_count(tensor: torch.Tensor) -> int:
    """How many digest words a tensor has (8-byte scalars count twice, complex counts its parts)."""
    size = tensor.element_size()
    scalar = size // 2 if tensor.is_complex() else size
    return tensor.numel() * size // min(scalar, 4)


def _signed(value: int) -> int:
    value &= _MOD - 1
    return value - _MOD if value >= _SIGN else value


def _eager_sums(words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    total = torch.zeros((), dtype=torch.int64, device=words.device)
    weighted = torch.zeros((), dtype=torch.int64, device=words.device)
    for start in range(0, words.numel(), CHUNK_ELEMENTS):
        chunk = words[start : start + CHUNK_ELEMENTS].to(torch.int64)
        positions = torch.arange(start + 1, start + 1 + chunk.numel(), dtype=torch.int64, device=words.device)
        total += chunk.sum()
        weighted += (chunk * positions).sum()
    return total, weighted


def _fused(words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    wide = words.to(torch.int64)
    positions = torch.arange(1, words.numel() + 1, dtype=torch.int64, device=words.device)
    return wide.sum(), (wide * positions).sum()


_compiled = None
_compiled_failed = os.environ.get("SDC_DIGEST_COMPILE", "1") == "0"
_compile_allowed = False
_triton_failed = os.environ.get("SDC_DIGEST_TRITON", "1") == "0"
# Device types Inductor generates code for in every torch build that has them.
_INDUCTOR_DEVICE_TYPES = frozenset({"cuda", "xpu", "mps"})


def allow_compile(allowed: bool = True) -> None:
    """Let this process try the torch.compile path (a sweep worker: the first call compiles).

    Off by default, so a training job that digests parameters never waits on a compiler.
    """
    global _compile_allowed
    _compile_allowed = allowed


def inductor_supports(device_type: str) -> bool:
    """Whether Inductor has a code generator for ``device_type`` (without importing Inductor).

    A plug-in that brings one registers it with ``torch._inductor`` itself, so Inductor is
    imported already whenever such a registration exists.
    """
    if device_type in _INDUCTOR_DEVICE_TYPES:
        return True
    common = sys.modules.get("torch._inductor.codegen.common")
    if common is None:
        return False
    try:
        return common.get_scheduling_for_device(device_type) is not None
    except Exception:
        return False


def _triton_sums(words: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The Triton kernel; None (and the next path from then on) if it cannot run on this device."""
    global _triton_failed
    if _triton_failed:
        return None
    try:
        return _digest_triton.word_sums(words, out)
    except Exception as exc:  # a backend Triton does not drive: the other paths are still exact
        log.info("sdc digest: Triton kernel unavailable on %s (%s); trying the compiled path", words.device, exc)
        _triton_failed = True
        return None


def _compiled_sums(words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The fused accelerator path; None (and the eager path from then on) if it cannot compile."""
    global _compiled, _compiled_failed
    if _compiled_failed or not _compile_allowed or not inductor_supports(words.device.type):
        return None
    try:
        if _compiled is None:
            _compiled = torch.compile(_fused, dynamic=True, fullgraph=True)
        return _compiled(words)
    except Exception as exc:  # no Triton, an unsupported backend: the eager path is still exact
        log.info("sdc digest: compiled path unavailable (%s); using the eager path", exc)
        _compiled_failed = True
        return None


def digest_sums(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(plain sum, position-weighted sum) of the integer words, as int64 tensors on the device.

    Stays on the device: callers that compare across ranks reduce these without a host sync.
    """
    words = integer_words(tensor)
    if words.numel() == 0:
        zero = torch.zeros((), dtype=torch.int64, device=words.device)
        return zero, zero.clone()
    if words.device.type == "cpu" and _digest_native.available():
        total, weighted = _digest_native.word_sums(words)
        return torch.tensor(_signed(total), dtype=torch.int64), torch.tensor(_signed(weighted), dtype=torch.int64)
    if words.device.type != "cpu":
        fused = _triton_sums(words)
        if fused is None and words.numel() >= 1 << 16:
            fused = _compiled_sums(words)
        if fused is not None:
            return fused
    return _eager_sums(words)


def eager_digest_sums(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference implementation (slow, correct everywhere); tests hold the fast paths to it."""
    return _eager_sums(integer_words(tensor))


def digest(tensor: torch.Tensor) -> str:
    """Hex digest of a tensor's exact bytes, dtype and shape (32 hex characters)."""
    total, weighted = digest_sums(tensor)
    header = f"{tensor.dtype}|{tuple(tensor.shape)}|{int(total) & 0xFFFFFFFFFFFFFFFF:016x}|{int(weighted) & 0xFFFFFFFFFFFFFFFF:016x}"
    return hashlib.blake2b(header.encode(), digest_size=16).hexdigest()


# --------------------------------------------------------------------------------------
# Many tensors at once: per-tensor sums, and buckets fingerprinted as if concatenated.


def tensor_sums(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-tensor (plain, weighted) sums as an (N, 2) int64 tensor on the tensors' device."""
    if not tensors:
        return torch.zeros((0, 2), dtype=torch.int64)
    batched = _triton_tensor_sums(tensors)
    if batched is not None:
        return batched
    rows = [torch.stack(digest_sums(t)) for t in tensors]
    return torch.stack([r.to(rows[0].device) for r in rows])


def _triton_tensor_sums(tensors: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """Every row added straight into one output: one launch per tensor, nothing to stack."""
    device = tensors[0].device
    if _triton_failed or device.type == "cpu" or any(t.device != device for t in tensors):
        return None
    out = torch.zeros((len(tensors), 2), dtype=torch.int64, device=device)
    for row, tensor in zip(out, tensors):
        words = integer_words(tensor)
        if words.numel() and _triton_sums(words, row) is None:
            return None
    return out


def combine_sums(sums: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
    """The (plain, weighted) sums of the concatenation of tensors with per-tensor ``sums``.

    A tensor starting ``offset`` words into the concatenation has every position shifted by
    ``offset``, which adds ``offset * plain`` to its weighted sum (all mod 2**64).
    """
    if sums.shape[0] == 0:
        return torch.zeros(2, dtype=torch.int64, device=sums.device)
    offsets = [0]
    for length in lengths[:-1]:
        offsets.append(offsets[-1] + int(length))
    shift = torch.tensor(offsets, dtype=torch.int64, device=sums.device)
    return torch.stack([sums[:, 0].sum(), (sums[:, 1] + shift * sums[:, 0]).sum()])


@dataclass(frozen=True)
class Bucket:
    """A group of named tensors fingerprinted together (like a DDP gradient bucket)."""

    index: int
    names: tuple[str, ...]
    words: tuple[int, ...]


def plan_buckets(named: Sequence[tuple[str, torch.Tensor]], bucket_bytes: int = 25 << 20) -> list[Bucket]:
    """Split tensors, in order, into buckets of about ``bucket_bytes`` (a tensor never splits)."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
    buckets: list[Bucket] = []
    names: list[str] = []
    words: list[int] = []
    size = 0
    for name, tensor in named:
        nbytes = tensor.numel() * tensor.element_size()
        if names and size + nbytes > bucket_bytes:
            buckets.append(Bucket(len(buckets), tuple(names), tuple(words)))
            names, words, size = [], [], 0
        names.append(name)
        words.append(word_count(tensor))
        size += nbytes
    if names:
        buckets.append(Bucket(len(buckets), tuple(names), tuple(words)))
    return buckets


def bucket_sums(per_tensor: torch.Tensor, buckets: Sequence[Bucket]) -> torch.Tensor:
    """(B, 2) sums per bucket from the (N, 2) per-tensor sums, tensors in bucket order."""
    rows, start = [], 0
    for bucket in buckets:
        stop = start + len(bucket.names)
        rows.append(combine_sums(per_tensor[start:stop], bucket.words))
        start = stop
    if not rows:
        return torch.zeros((0, 2), dtype=torch.int64, device=per_tensor.device)
    return torch.stack(rows)


# --------------------------------------------------------------------------------------


def squared_norm(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of squares as a float64 0-d tensor on the tensor's device (no host sync off the CPU).

    Accumulated in float64 where it would overflow in float32, so one huge element (an
    exponent-bit flip) shows as an outlier rather than as an overflow to inf.
    """
    flat = tensor.detach().reshape(-1)
    if not flat.is_floating_point() or flat.numel() == 0:
        return torch.zeros((), dtype=torch.float64, device=flat.device)
    if flat.device.type == "cpu":
        # BLAS's dot is ~40x faster on the CPU than a float64 norm (which copies the tensor);
        # the slower pass runs only when float32 overflowed. Reading the value costs no sync here.
        sq = torch.dot(flat, flat)
        if torch.isinf(sq):
            return torch.linalg.vector_norm(flat, dtype=torch.float64) ** 2
        return sq.to(torch.float64)
    return torch.linalg.vector_norm(flat, dtype=torch.float64) ** 2
