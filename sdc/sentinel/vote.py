"""Pure decisions of the sentinel about replicas: who is blamed (``Suspect``), what one
check found (``Finding``), what a step came to (``StepVerdict``), and the majority vote over
replicas' fingerprints. Values in, values out: no torch.distributed here."""

from __future__ import annotations

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
class Finding:
    """What one check (grad_check, param_check, audit, replay, local_check ...) found at a step."""

    kind: str
    diagnosis: str
    suspects: tuple[Suspect, ...] = ()
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StepVerdict:
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


def step_verdict(step: int, findings: Sequence[Finding], *, checks: Sequence[str] = (), skipped: bool = False,
                 resynced: bool = False) -> StepVerdict:
    """A step's verdict from its findings: the worst diagnosis, every blamed rank once."""
    overall = worst([f.diagnosis for f in findings])
    # A later replay or second opinion that attributes a disagreement supersedes 'unattributed'.
    if overall == "unattributed" and any(f.kind in ("replay", "audit") and f.diagnosis in ("divergence", "transient")
                                         for f in findings):
        overall = worst([f.diagnosis for f in findings if f.diagnosis != "unattributed"])
    suspects: dict[int, Suspect] = {}
    for finding in findings:
        if finding.diagnosis in ("ok", "correct"):
            continue
        for s in finding.suspects:
            prior = suspects.get(s.rank)
            params = tuple(dict.fromkeys((prior.params if prior else ()) + s.params))
            suspects[s.rank] = Suspect(s.rank, s.host, s.chip_id, params)
    return StepVerdict(
        step=step,
        diagnosis=overall,
        suspects=tuple(suspects[r] for r in sorted(suspects)),
        checks=tuple(checks),
        skipped=skipped,
        resynced=resynced,
        details={"findings": [(f.kind, f.diagnosis) for f in findings]},
    )


@dataclass(frozen=True)
class VoteResult:
    """Majority vote over W replicas: which ranks (indices into the vote) disagree, on what."""

    diagnosis: str  # ok | divergence (minority named) | unattributed (no strict majority)
    minority: dict[int, tuple[str, ...]]  # replica index -> names it disagrees on, in order
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
