"""The one node sweep: what ``sdc sweep`` and the agent's sweep job both run.

In this order: deliver what the outbox holds (so a sweep completed while the database was
down is stored as ``complete`` before anything looks at ``running`` sweeps), mark this host's
abandoned sweeps ``incomplete``, put chips on probation first, read the fleet's history for a
budget, then run the probes and deliver every record — to the database, or to the outbox when
the database is unreachable, so a sweep on a node whose database is down still runs and loses
nothing. A database that answers with the wrong schema is refused before any work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from probes.base import Probe
from sdc.faults import Fault
from sdc.node.backends import LoadedBackend, load_backend_modules
from sdc.node.devices import ChipHandle, discover, hostname
from sdc.sweep.plan import SweepOptions
from sdc.sweep.runner import Progress, StopFlag, SweepSummary, run_sweep

log = logging.getLogger(__name__)


class NodeSweepError(ValueError):
    """The sweep cannot start as asked (an injected fault names a chip it does not probe, ...)."""


@dataclass(frozen=True)
class NodeSweepOptions:
    """What ``sdc sweep`` flags and the agent's ``[agent]`` table both set.

    Args:
        suite: quick, standard or burn.
        devices: chips to probe (``cuda:0,cuda:1``; ``cpu:0,cpu:1`` are virtual test chips);
            None: every accelerator found, else the CPU.
        seed, repeats, faults, case_timeout_s, budget_s: as in ``SweepOptions``.
        burn_duration_s: seconds of sustained load per chip for the burn probe.
        data_dir: where the shared fp64 reference cache lives (``reference-cache/``).
        catalog: a harvested catalog file (``sdc harvest``) replayed by the ``catalog`` probe.
        tolerance_rows: the config file's ``[[tolerance.rows]]`` overriding the shipped table.
        backend_modules: device plug-ins to import before discovery (``sdc.node.backends``),
            and ``backend_source``, where they were asked for (said in errors).
    """

    suite: str = "quick"
    devices: Optional[str] = None
    seed: int = 0
    repeats: int = 3
    faults: Sequence[Fault] = ()
    case_timeout_s: float = 120.0
    budget_s: Optional[float] = None
    burn_duration_s: float = 60.0
    data_dir: Optional[Path] = None
    catalog: Optional[Path] = None
    tolerance_rows: Sequence[dict] = ()
    backend_modules: Sequence[str] = ()
    backend_source: str = ""


@dataclass
class NodeSweepResult:
    summary: SweepSummary
    stored: int = 0
    spooled: int = 0
    lost: int = 0  # neither stored nor spooled (database down and the outbox unusable)
    lost_message: str = ""
    replayed: int = 0  # records delivered from the outbox before the sweep
    abandoned: list[str] = field(default_factory=list)
    on_probation: list[ChipHandle] = field(default_factory=list)
    unreachable: str = ""  # why the database could not be used ("" when it could)
    outbox: Optional[Path] = None


def select_probes(probes: dict[str, Probe], names: Sequence[str] | None) -> list[Probe]:
    """The named probe families (all when ``names`` is empty); NodeSweepError names unknown ones."""
    if not names:
        return list(probes.values())
    unknown = [n for n in names if n not in probes]
    if unknown:
        raise NodeSweepError(f"--probes: unknown probe(s) {', '.join(unknown)}; installed: {', '.join(probes)}")
    return [probes[n] for n in names]


def load_backends(options: NodeSweepOptions) -> list[LoadedBackend]:
    """Import the device plug-ins the options name; ``BackendModuleError`` says which failed."""
    return load_backend_modules(list(options.backend_modules), options.backend_source)


def chips_to_probe(options: NodeSweepOptions) -> list[ChipHandle]:
    """This node's chips for the sweep; ``DeviceError`` or ``NodeSweepError`` say what is wrong.

    The backend modules are imported first, so a plug-in's devices are found; a catalog and
    tolerance rows are checked before any probing.
    """
    if options.catalog is not None:
        from probes.catalog import CatalogError, read_catalog
        from probes.tolerance import ToleranceError, load_table

        try:
            read_catalog(options.catalog)
            load_table(list(options.tolerance_rows))
        except (CatalogError, ToleranceError) as exc:
            raise NodeSweepError(str(exc)) from None
    load_backends(options)
    chips = discover(options.devices)
    known = {c.name for c in chips}
    stray = sorted({f.chip for f in options.faults} - known)
    if stray:
        raise NodeSweepError(
            f"--inject names {', '.join(stray)}, which this sweep does not probe (chips: {', '.join(sorted(known))})"
        )
    return chips


def node_sweep(
    store,
    options: NodeSweepOptions,
    probes: Sequence[Probe],
    chips: Sequence[ChipHandle] | None = None,
    progress: Progress | None = None,
    stop: StopFlag | None = None,
    on_start: Callable[[list[ChipHandle]], None] | None = None,
) -> NodeSweepResult:
    """Sweep this node's chips and deliver the evidence; see the module docstring for the order.

    Args:
        store: an ``sdc.store.Store`` (with an outbox, so nothing is lost while the database is down).
        chips: the chips to probe (default: ``chips_to_probe(options)``).
        on_start: called with the chips in the order they will be tested, before any runs
            (e.g. to size a progress bar).
    """
    from sqlalchemy.exc import OperationalError

    from sdc.store import short_reason

    chips = list(chips) if chips is not None else chips_to_probe(options)
    result = NodeSweepResult(summary=None, outbox=store.outbox.directory if store.outbox else None)  # type: ignore[arg-type]
    engine = None
    try:
        result.replayed = store.flush()
        engine = store.engine()
    except OperationalError as exc:  # unreachable: run anyway and spool (a wrong schema raises StoreError)
        result.unreachable = short_reason(exc)

    fault_counts, case_seconds = {}, {}
    if engine is not None:
        from sdc.quarantine.states import probation_chips, state_names
        from sdc.store.history import case_seconds as measured, mismatch_counts
        from sdc.store.reader import quarantine_events
        from sdc.store.sweeps import mark_abandoned_sweeps

        result.abandoned = mark_abandoned_sweeps(engine, hostname())
        on_probation = set(probation_chips(state_names(quarantine_events(engine))))
        chips = sorted(chips, key=lambda handle: handle.chip.chip_id not in on_probation)
        result.on_probation = [h for h in chips if h.chip.chip_id in on_probation]
        if options.budget_s is not None:
            fault_counts, case_seconds = mismatch_counts(engine), measured(engine)
    sweep_options = SweepOptions(
        seed=options.seed,
        repeats=options.repeats,
        faults=options.faults,
        case_timeout_s=options.case_timeout_s,
        budget_s=options.budget_s,
        fault_counts=fault_counts,
        case_seconds=case_seconds,
        reference_cache=str(Path(options.data_dir) / "reference-cache") if options.data_dir else None,
        probe_settings={
            "burn": {"duration_s": options.burn_duration_s},
            "catalog": {"path": str(options.catalog or ""), "tolerance_overrides": list(options.tolerance_rows)},
        },
    )
    if on_start is not None:
        on_start(chips)

    def sink(records) -> None:
        delivery = store.deliver(records)
        result.stored += delivery.stored
        result.spooled += delivery.spooled
        if delivery.lost:
            result.lost += delivery.lost
            result.lost_message = delivery.message
            log.error("%s", delivery.message)
        if delivery.spooled:
            log.warning("%s", delivery.message)

    result.summary = run_sweep(
        chips, list(probes), options.suite, sink, seed=options.seed, repeats=options.repeats,
        progress=progress, options=sweep_options, stop=stop,
    )
    return result

