"""Loss-spike detection for one rank: a loss far above the median of the recent window.

A running maximum since step 0 (what this replaced) never forgets the large early losses, so
a spike late in training had to beat the first step's loss; a windowed median follows the
loss as it falls and is not moved by one spike."""

from __future__ import annotations

import math
from collections import deque

from sdc.sentinel.checks import median


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
