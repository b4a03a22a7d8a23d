"""StepState: what one rank saw during one training step, as the sentinel's hooks fill it
in — the batch and RNG state a replay needs, the loss, the local anomaly flags, the local
gradient buckets' digests. The replayer and the audits read it as an explicit value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class StepState:
    step: int
    batch: Any = None
    rng: dict | None = None
    flags: int = 0
    error: bool = False
    loss: torch.Tensor | None = None
    loss_value: float | None = None
    # bucket -> (digest, squared norm) as device tensors, until on_grads_ready reads them all at once
    local_on_device: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    # bucket -> ((digest words), squared norm) on the host
    local_buckets: dict[int, tuple[tuple[int, int], float]] = field(default_factory=dict)
    # bucket -> indices of the parameters it holds (-1: a parameter the sentinel does not watch)
    local_layout: dict[int, tuple[int, ...]] = field(default_factory=dict)

    @property
    def local_norm(self) -> float | None:
        if not self.local_buckets:
            return None
        return sum(sq for _, sq in self.local_buckets.values()) ** 0.5

    def layout(self) -> list[tuple[int, ...]] | None:
        """Bucket layout a replay can reproduce, or None (no buckets, or unwatched parameters)."""
        if not self.local_buckets or any(-1 in ids for ids in self.local_layout.values()):
            return None
        return [self.local_layout[i] for i in sorted(self.local_layout)]

    def read_local_buckets(self) -> None:
        """Bring the local buckets' digests and squared norms to the host, in one sync."""
        if not self.local_on_device:
            return
        indices = list(self.local_on_device)
        sums = torch.stack([self.local_on_device[i][0] for i in indices]).tolist()
        squares = torch.stack([self.local_on_device[i][1] for i in indices]).tolist()
        for i, pair, sq in zip(indices, sums, squares):
            self.local_buckets[i] = ((int(pair[0]), int(pair[1])), float(sq))
        self.local_on_device = {}
