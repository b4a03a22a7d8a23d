"""Local checks of one rank's step, decided without any replica: the anomaly flags a rank
raises (non-finite loss, loss spike, non-finite gradient) and which ranks' local gradient norms
stand out from the others'. Pure: values in, values out."""

from __future__ import annotations

import math
import struct
from typing import Sequence

FLAG_NONFINITE_LOSS, FLAG_LOSS_SPIKE, FLAG_NONFINITE_GRAD = 1, 2, 4
FLAG_NAMES = {FLAG_NONFINITE_LOSS: "nonfinite_loss", FLAG_LOSS_SPIKE: "loss_spike", FLAG_NONFINITE_GRAD: "nonfinite_grad"}
ANOMALY_FLAGS = {"nonfinite_loss": FLAG_NONFINITE_LOSS, "loss_spike": FLAG_LOSS_SPIKE}


def flag_names(flags: int) -> list[str]:
    return [name for bit, name in FLAG_NAMES.items() if flags & bit]


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median of nothing")
    return ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])


def norm_outliers(norms: Sequence[float], ratio: float) -> list[int]:
    """Indices of local gradient norms more than ``ratio`` times away from the ranks' median.

    Non-finite norms are always outliers. Needs three or more ranks to say who is odd (with
    two, each is as far from the other as the other is from it).
    """
    finite = [n for n in norms if math.isfinite(n)]
    bad = [i for i, n in enumerate(norms) if not math.isfinite(n)]
    if len(norms) < 3 or not finite:
        return bad
    middle = median(finite)
    if middle <= 0:
        return bad  # most ranks saw no gradient: a ratio means nothing
    odd = {i for i, n in enumerate(norms) if math.isfinite(n) and (n > ratio * middle or n * ratio < middle)}
    return sorted(set(bad) | odd)


def float_bits(value: float) -> int:
    """A float64 as the int64 with the same bits: MAX over these is MAX over non-negative floats."""
    return struct.unpack("<q", struct.pack("<d", value))[0]


def bits_float(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<q", bits))[0]
