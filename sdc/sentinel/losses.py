"""Loss-spike detection for one rank: a loss far above the median of the recent window.

A running maximum since step 0 (what this replaced) never forgets the large early losses, so
a spike late in training had to beat the first step's loss; a windowed median follows the
loss as it falls and is not moved by one spike."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import torch

from sdc.sentinel.checks import FLAG_LOSS_SPIKE, FLAG_NONFINITE_LOSS, median

# Losses kept on the device between reads: bounds the delay of a local-only report when
# nothing else makes the sentinel read them.
MAX_PENDING_LOSSES = 64


class LossTracker:
    """Flags a non-finite loss, or one above ``factor`` times the median of the last ``window``.

    Args:
        factor: how many times the recent median a loss must exceed to be a spike.
        warmup_steps: losses learnt before spikes count (early losses fall fast).
        window: how many recent healthy losses the median is taken over.
    """

    def __init__(self, factor: float, warmup_steps: int, window: int = 50):
        self.factor = factor
        self.warmup_steps = warmup_steps
        self.recent: deque[float] = deque(maxlen=max(1, window))
        self.seen = 0

    def threshold(self) -> float:
        """The magnitude above which a loss is a spike now (inf while warming up)."""
        if self.seen < max(self.warmup_steps, 1) or not self.recent:
            return float("inf")
        middle = median(self.recent)
        return self.factor * middle if middle > 0 else float("inf")

    def check(self, loss: float) -> str | None:
        """The anomaly this loss shows ('nonfinite_loss', 'loss_spike'), or None; then learns it."""
        if not math.isfinite(loss):
            return "nonfinite_loss"
        magnitude = abs(loss)
        if self.seen >= max(self.warmup_steps, 1) and self.recent:
            middle = median(self.recent)
            if middle > 0 and magnitude > self.factor * middle:
                return "loss_spike"  # not learnt: one spike must not raise the bar for the next
        self.seen += 1
        self.recent.append(magnitude)
        return None


@dataclass(frozen=True)
class LossReading:
    """One loss read back from the device: its step, value and anomaly (or None)."""

    step: int
    value: float
    anomaly: str | None


class PendingLosses:
    """A rank's losses kept on their device; read back in one host sync when asked, or when
    ``MAX_PENDING_LOSSES`` have piled up, and run through the tracker in step order."""

    def __init__(self, tracker: LossTracker):
        self.tracker = tracker
        self.pending: list[tuple[int, torch.Tensor]] = []

    @property
    def full(self) -> bool:
        return len(self.pending) >= MAX_PENDING_LOSSES

    def add(self, step: int, loss: torch.Tensor) -> None:
        self.pending.append((step, loss))

    def device_flags(self, loss: torch.Tensor) -> torch.Tensor:
        """This loss's anomaly flags as an int64 on its device, against the current threshold
        (no host sync: the flags travel to the other ranks before anyone reads them)."""
        value = loss.reshape(()).float()
        return ((~torch.isfinite(value)).to(torch.int64) * FLAG_NONFINITE_LOSS
                + (value.abs() > self.tracker.threshold()).to(torch.int64) * FLAG_LOSS_SPIKE)

    def read(self) -> list[LossReading]:
        if not self.pending:
            return []
        pending, self.pending = self.pending, []
        values = torch.stack([loss.reshape(()).float() for _, loss in pending]).tolist()
        return [LossReading(step, value, self.tracker.check(value)) for (step, _), value in zip(pending, values)]
