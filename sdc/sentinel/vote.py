"""Pure decisions of the sentinel: majority vote over replicas' fingerprints, outliers among
ranks' local gradient norms, loss spikes. Values in, values out: no torch.distributed here."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Hashable, Sequence

# Worst first: a step's verdict is its worst finding.
SEVERITY = {"persistent": 5, "divergence": 4, "transient": 3, "unattributed": 2, "correct": 1, "ok": 0}


@dataclass(frozen=True)
class Suspect:
    """A replica the sentinel blames: global rank, where it runs, and what it got wrong."""

    rank: int
    host: str
    chip_id: str
    params: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"rank": self.rank, "host": self.host, "chip_id": self.chip_id, "params": list(self.params)}


@dataclass(frozen=True)
class Verdict:
    """What the sentinel concluded about one step (``ok`` also when the data, not a chip, was at fault)."""

    step: int
    diagnosis: str = "ok"
    suspects: tuple[Suspect, ...] = ()
    checks: tuple[str, ...] = ()
    skipped: bool = False
    resynced: bool = False
    details: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.diagnosis in ("ok", "correct")


def worst(diagnoses: Sequence[str]) -> str:
    return max(diagnoses, key=SEVERITY.__getitem__, default="ok")


@dataclass(frozen=True)
class VoteResult:
    """Majority vote over W replicas: which ranks (indices into the vote) disagree, on what."""

    diagnosis: str  # ok | divergence (minority named) | unattributed (no strict majority)
    minority: dict[int, tuple[str, ...]]  # replica index -> names it disagrees on
    unattributed: tuple[str, ...]  # names with no strict majority
    majority_replica: int | None  # a replica index that holds the majority value everywhere


def majority_vote(fingerprints: Sequence[Sequence[Hashable]], names: Sequence[str]) -> VoteResult:
    """Vote per name over replicas' fingerprints (``fingerprints[replica][name_index]``).

    A value held by more than half of the replicas is the truth; replicas holding anything
    else are the minority. Without a strict majority (two replicas, an even split) nobody is
    named and the name is unattributed.
    """
    replicas = len(fingerprints)
    if replicas == 0:
        raise ValueError("majority_vote: no replicas")
    minority: dict[int, list[str]] = defaultdict(list)
    unattributed: list[str] = []
    in_majority = set(range(replicas))
    for column, name in enumerate(names):
        values = [fingerprints[r][column] for r in range(replicas)]
        counts = Counter(values)
        if len(counts) == 1:
            continue
        value, count = counts.most_common(1)[0]
        if 2 * count <= replicas:
            unattributed.append(name)
            in_majority.clear()
            continue
        for r, v in enumerate(values):
            if v != value:
                minority[r].append(name)
                in_majority.discard(r)
    if not minority and not unattributed:
        diagnosis = "ok"
    else:
        diagnosis = "unattributed" if unattributed and not minority else "divergence"
    return VoteResult(
        diagnosis=diagnosis,
        minority={r: tuple(v) for r, v in sorted(minority.items())},
        unattributed=tuple(unattributed),
        majority_replica=min(in_majority) if in_majority else None,
    )


def norm_outliers(norms: Sequence[float], ratio: float) -> list[int]:
    """Indices of local gradient norms more than ``ratio`` times away from the median.

    Non-finite norms are always outliers. Needs three or more ranks to say who is odd.
    """
    finite = sorted(n for n in norms if math.isfinite(n))
    bad = [i for i, n in enumerate(norms) if not math.isfinite(n)]
    if len(norms) < 3 or not finite:
        return bad
    median = finite[len(finite) // 2] if len(finite) % 2 else 0.5 * (finite[len(finite) // 2 - 1] + finite[len(finite) // 2])
    if median <= 0:
        return bad  # most ranks saw no gradient: a ratio means nothing
    return sorted(set(bad) | {i for i, n in enumerate(norms) if math.isfinite(n) and (n > ratio * median or n * ratio < median)})


class LossTracker:
    """Flags a non-finite loss, or one above ``factor`` times the running maximum after warm-up."""

    def __init__(self, factor: float, warmup_steps: int):
        self.factor = factor
        self.warmup_steps = warmup_steps
        self.seen = 0
        self.running_max = 0.0

    def check(self, loss: float) -> str | None:
        """The anomaly this loss shows ('nonfinite_loss', 'loss_spike'), or None; then learns it."""
        if not math.isfinite(loss):
            return "nonfinite_loss"
        magnitude = abs(loss)
        if self.seen >= self.warmup_steps and self.running_max > 0 and magnitude > self.factor * self.running_max:
            return "loss_spike"  # not learnt: one spike must not raise the bar for the next
        self.seen += 1
        self.running_max = max(self.running_max, magnitude)
        return None
