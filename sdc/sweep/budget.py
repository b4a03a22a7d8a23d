"""Choosing probe cases to fit a time budget: fault-finders first, then coverage.

Pure: takes the planned cases, how often each probe has found faults in this fleet, and a
cost estimate per case; returns the cases to run. Probes that found more faults come first
with all their cases; among probes with equal counts cases are taken round-robin (every
probe's first case, then every probe's second ...), so a short budget still touches every
family before it deepens any.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, TypeVar

Item = TypeVar("Item")


def select_within_budget(
    work: Sequence[Item],
    budget_s: float,
    probe_of: Callable[[Item], str],
    cost_s: Callable[[Item], float],
    fault_counts: Mapping[str, int],
) -> list[Item]:
    """The cases of ``work`` to run in ``budget_s`` seconds, in the order they should run.

    A case that does not fit is passed over and smaller later ones may still fit. The
    result keeps ``work``'s order within each probe.
    """
    probe_rank: dict[str, int] = {}
    position: list[int] = []
    seen: dict[str, int] = {}
    for item in work:
        name = probe_of(item)
        probe_rank.setdefault(name, len(probe_rank))
        position.append(seen.get(name, 0))
        seen[name] = seen.get(name, 0) + 1

    def priority(pair: tuple[int, Item]) -> tuple[int, int, int]:
        index, item = pair
        name = probe_of(item)
        return (-int(fault_counts.get(name, 0)), position[index], probe_rank[name])

    chosen: list[Item] = []
    spent = 0.0
    for _, item in sorted(enumerate(work), key=priority):
        cost = max(0.0, float(cost_s(item)))
        if spent + cost <= budget_s:
            chosen.append(item)
            spent += cost
    return chosen
