"""What a sweep runs on a chip: the options of a sweep, the (probe, case) plan of a suite for a
chip's device, cut to a budget when one is set, and chips on probation first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

from probes.base import Case, Probe
from sdc.faults import Fault
from sdc.node.devices import ChipHandle
from sdc.records import canonical_json
from sdc.sweep.budget import select_within_budget


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep runs, beyond which chips and which suite.

    Args:
        seed: seed of the probe inputs; cohorts compare equal seeds.
        repeats: runs per case, compared bit for bit.
        faults: injected faults (drills and tests).
        case_timeout_s: watchdog limit per case (a probe may ask for more, e.g. burn).
        budget_s: seconds per chip; cases are chosen by ``sdc.sweep.budget`` when set.
        fault_counts: mismatches per probe in this fleet (for the budget order).
        case_seconds: measured seconds per (probe, case key) from earlier sweeps.
        isolate: run each chip in a worker process under the watchdog (False: in-process,
            no watchdog; for benchmarks and debugging).
        parallel: run chips at once (default: when no chip is a virtual CPU chip).
        reference_cache: directory for cached fp64 references shared by workers.
        probe_settings: attribute values per probe name, e.g. ``{"burn": {"duration_s": 600}}``.
    """

    seed: int = 0
    repeats: int = 3
    faults: Sequence[Fault] = ()
    case_timeout_s: float = 120.0
    budget_s: Optional[float] = None
    fault_counts: Mapping[str, int] = field(default_factory=dict)
    case_seconds: Mapping[tuple[str, str], float] = field(default_factory=dict)
    isolate: bool = True
    parallel: Optional[bool] = None
    reference_cache: Optional[str] = None
    probe_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def plan(probes: Iterable[Probe], suite: str, handle: ChipHandle | None = None) -> list[tuple[Probe, Case]]:
    """Every (probe, case) of ``suite`` for the chip's kind of device."""
    if handle is None:
        return [(probe, case) for probe in probes for case in probe.cases(suite)]
    return [(probe, case) for probe in probes for case in probe.cases_for(suite, handle.device)]


def probation_first(chips: Sequence[ChipHandle], probation: Iterable[str]) -> list[ChipHandle]:
    """Chips on probation (released from quarantine) first, the rest in their order.

    A released chip must prove itself: if the sweep is cut short, it is the one tested.
    """
    on_probation = set(probation)
    return sorted(chips, key=lambda handle: handle.chip.chip_id not in on_probation)


def chip_plan(probes: Sequence[Probe], suite: str, handle: ChipHandle, options: SweepOptions) -> list[tuple[Probe, Case]]:
    work = plan(probes, suite, handle)
    if options.budget_s is None:
        return work

    def cost(item: tuple[Probe, Case]) -> float:
        probe, case = item
        measured = options.case_seconds.get((probe.name, canonical_json(case.to_dict())))
        return measured if measured is not None else probe.estimate_s(case, handle.device)

    return select_within_budget(work, options.budget_s, lambda item: item[0].name, cost, options.fault_counts)
