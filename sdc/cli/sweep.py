"""``sdc sweep``: run probes on this node's chips and store the evidence."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from contextlib import contextmanager, nullcontext

import click
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from sdc.cli.context import AppContext, fail, handles_errors, pass_app
from sdc.config import safe_url
from sdc.faults import FaultSpecError, parse_faults
from sdc.node.backends import BackendModuleError, requested_modules
from sdc.node.devices import DeviceError
from sdc.sweep import SweepOptions, SweepSummary, chip_plan
from sdc.sweep.node_sweep import (
    NodeSweepError,
    NodeSweepOptions,
    chips_to_probe,
    load_backends,
    node_sweep,
    select_probes,
)


@click.command("sweep")
@click.option("--suite", default="quick", show_default=True, type=click.Choice(["quick", "standard", "burn"]))
@click.option("--devices", help="Chips to probe, e.g. cuda:0,cuda:1 (default: all found). cpu:0,cpu:1 are virtual test chips.")
@click.option("--probes", "probe_names", help="Only these probe families, e.g. gemm,memory (default: all installed).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for probe inputs; cohorts compare equal seeds.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1, 1000), help="Runs per case, compared bit for bit.")
@click.option("--budget", type=click.FloatRange(min=0, min_open=True), help="Seconds per chip: run the probes that found most faults in this fleet first, then the widest coverage, until the time is used.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True, help="Seconds of sustained load per chip for --suite burn.")
@click.option("--case-timeout", type=click.FloatRange(min=0, min_open=True), default=120.0, show_default=True, help="Watchdog: a case running longer is killed and recorded as timeout.")
@click.option("--catalog", type=click.Path(dir_okay=False), help="Also replay the cases of a harvested catalog (sdc harvest) as the 'catalog' probe.")
@click.option("--inject", multiple=True, help="Inject a fault for a drill, e.g. cpu:2:bitflip:rate=0.05 (repeatable; also SDC_INJECT).")
@click.option("--backend-module", "backend_modules", multiple=True, metavar="MODULE", help="Import this device plug-in (a PrivateUse1 backend such as torch_npu) before discovery (repeatable; also SDC_BACKEND_MODULES, or backend_modules in the config file).")
@click.option("--db", "db_url", help="Database URL (same as the global --db).")
@pass_app
@handles_errors
def sweep_command(
    app: AppContext,
    suite: str,
    devices: str | None,
    probe_names: str | None,
    seed: int,
    repeats: int,
    budget: float | None,
    duration: float,
    case_timeout: float,
    inject: tuple[str, ...],
    catalog: str | None,
    backend_modules: tuple[str, ...],
    db_url: str | None,
) -> None:
    """Probe this node's chips and store a sweep. Exit 0 healthy, 1 fault found, 2 error."""
    from probes.registry import all_probes

    if db_url:
        app.db, app._settings = db_url, None
    try:
        faults = parse_faults(inject)
        modules, source = requested_modules(backend_modules, config=app.settings.tables)
        options = NodeSweepOptions(
            suite=suite, devices=devices, seed=seed, repeats=repeats, faults=faults, case_timeout_s=case_timeout,
            budget_s=budget, burn_duration_s=duration, data_dir=app.settings.data_dir,
            catalog=Path(catalog) if catalog else None,
            tolerance_rows=tuple(app.settings.section("tolerance").get("rows", ())),
            backend_modules=tuple(modules), backend_source=source,
        )
        loaded = load_backends(options)
        chips = chips_to_probe(options)
        names = [n.strip() for n in (probe_names or "").split(",") if n.strip()]
        if catalog and names and "catalog" not in names:
            names.append("catalog")
        probes = select_probes(all_probes(), names)
    except (FaultSpecError, DeviceError, NodeSweepError, BackendModuleError) as exc:
        fail(str(exc))
    for backend in loaded:
        app.err.print(f"loaded backend module {escape(backend.describe())}")

    store = app.store()
    show_progress = not app.json_output and app.err.is_terminal
    with _progress(app, show_progress) as bar, _stop_on_signals() as stop:
        callback = None
        plan_options = SweepOptions(seed=seed, repeats=repeats, budget_s=budget)

        def on_start(ordered):
            nonlocal callback
            if bar is not None:
                total = sum(len(chip_plan(probes, suite, c, plan_options)) for c in ordered)
                callback = _advance(bar, bar.add_task("starting", total=total))

        def progress(*args):
            if callback is not None:
                callback(*args)

        result = node_sweep(store, options, probes, chips=chips, progress=progress, stop=stop, on_start=on_start)
    summary = result.summary
    if result.unreachable:
        app.err.print(f"[yellow]database unreachable ({escape(result.unreachable)}); results were kept in the outbox {result.outbox}[/]")
    if result.abandoned:
        app.err.print(f"marked {len(result.abandoned)} earlier sweep(s) on this host incomplete (their process had died)")
    for handle in result.on_probation:
        app.err.print(f"{handle.name} ({escape(handle.chip.chip_id)}) is on probation after release: tested first")
    spooled = result.spooled
    if summary.sweep.status == "aborted":
        app.err.print(f"[yellow]sweep aborted: {summary.sweep.message}; it will not count as evidence[/]")
    if app.json_output:
        app.emit_json(_as_json(summary, spooled) | {"backend_modules": [b.module for b in loaded], "collectives": summary.collectives})
    else:
        _print_table(app, summary, suite)
        if summary.collectives:
            app.out.print(f"collectives: {escape(summary.collectives)}")
        if spooled:
            app.err.print(
                f"[yellow]database unavailable: {spooled} records kept in the outbox {store.outbox.directory}; "
                "'sdc flush' (or the next successful write) delivers them[/]"
            )
        elif not result.lost:
            app.out.print(f"stored in {app.store().url.split('://')[0]} database: {_where(app)}")
    if result.lost:  # the results above were seen, but not kept: not "healthy", whatever they say
        fail(result.lost_message)
    sys.exit(int(summary.exit_code))


@contextmanager
def _stop_on_signals():
    """SIGTERM or a first Ctrl-C stops the sweep between cases (running cases finish).

    A second Ctrl-C interrupts at once, as usual.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request_stop(signum, _frame):
        stop.set()
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, previous_int)

    previous_term = signal.signal(signal.SIGTERM, request_stop)
    previous_int = signal.signal(signal.SIGINT, request_stop)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)


def _advance(bar: Progress, task):
    """A sweep progress callback: names the running case, advances when one ends."""

    def callback(handle, probe_name, case, outcome):
        bar.update(task, description=f"{handle.name} {probe_name}/{case.name} {case.dtype}")
        if outcome is not None:
            bar.advance(task)

    return callback


def _progress(app: AppContext, enabled: bool):
    if not enabled:
        return nullcontext(None)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=app.err,
        transient=True,
    )


def _as_json(summary: SweepSummary, spooled: int) -> dict:
    return {
        "sweep_id": summary.sweep.sweep_id,
        "status": summary.sweep.status,
        "exit_code": int(summary.exit_code),
        "chips": [
            {"name": c.name, "chip_id": c.chip_id, "statuses": dict(c.statuses), "failures": c.failures}
            for c in summary.chips
        ],
        "spooled": spooled,
    }


def _print_table(app: AppContext, summary: SweepSummary, suite: str) -> None:
    table = Table(title=f"sweep {summary.sweep.sweep_id[:12]} ({suite}) on {summary.sweep.host}")
    for column in ("chip", "chip id", "ok", "mismatch", "error", "timeout", "skipped", "verdict"):
        table.add_column(column)
    for c in summary.chips:
        verdict = {0: "[green]healthy[/]", 1: "[red]FAULT[/]", 2: "[yellow]unknown[/]"}[int(c.exit_code)]
        if not sum(c.statuses.values()):
            verdict = "[yellow]not run[/]"
        table.add_row(c.name, c.chip_id, *(str(c.statuses[s]) for s in ("ok", "mismatch", "error", "timeout", "skipped")), verdict)
    app.out.print(table)
    for c in summary.chips:
        for failure in c.failures:
            app.out.print(f"  {c.name}: {failure}")


def _where(app: AppContext) -> str:
    return safe_url(app.settings.database_url)
