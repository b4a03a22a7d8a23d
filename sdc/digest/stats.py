"""Float statistics of a tensor: where a digest says *that* values differ, these say *how much*.

Computed on the tensor's device in float64 where the backend can; a backend that lacks an op
(float64, ``abs`` ...) gets the statistics computed on the host from a copy, with equal values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FloatStats:
    """Float statistics: where a digest says *that* values differ, these say *how much*."""

    sum: float
    sum_sq: float
    abs_max: float
    nonfinite: int


def float_stats(tensor: torch.Tensor) -> FloatStats:
    """Sum, sum of squares and largest magnitude of the finite values, and the count of the others."""
    values = tensor.detach().reshape(-1)
    if values.device.type != "cpu":
        try:
            return _stats(values)
        except (RuntimeError, NotImplementedError, TypeError):  # an op this backend lacks
            values = values.cpu()
    return _stats(values)


def _stats(values: torch.Tensor) -> FloatStats:
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
