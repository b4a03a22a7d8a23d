"""``sdc sweep``: run probes on this node's chips and store the evidence."""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager, nullcontext

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from sdc.commands.context import AppContext, fail, handles_errors, pass_app
from sdc.devices import DeviceError, discover, hostname
from sdc.faults import FaultSpecError, parse_faults
from sdc.store.sweeps import mark_abandoned_sweeps
from sdc.sweep import SweepOptions, SweepSummary, chip_plan, probation_first, run_sweep


def _select_probes(names: str | None) -> list:
    from probes.registry import all_probes

    probes = all_probes()
    if not names:
        return list(probes.values())
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in probes]
    if unknown:
        fail(f"--probes: unknown probe(s) {', '.join(unknown)}; installed: {', '.join(probes)}")
    return [probes[n] for n in wanted]


@click.command("sweep")
@click.option("--suite", default="quick", show_default=True, type=click.Choice(["quick", "standard", "burn"]))
@click.option("--devices", help="Chips to probe, e.g. cuda:0,cuda:1 (default: all found). cpu:0,cpu:1 are virtual test chips.")
@click.option("--probes", "probe_names", help="Only these probe families, e.g. gemm,memory (default: all installed).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for probe inputs; cohorts compare equal seeds.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1, 1000), help="Runs per case, compared bit for bit.")
@click.option("--budget", type=click.FloatRange(min=0, min_open=True), help="Seconds per chip: run the probes that found most faults in this fleet first, then the widest coverage, until the time is used.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True, help="Seconds of sustained load per chip for --suite burn.")
@click.option("--case-timeout", type=click.FloatRange(min=0, min_open=True), default=120.0, show_default=True, help="Watchdog: a case running longer is killed and recorded as timeout.")
@click.option("--inject", multiple=True, help="Inject a fault for a drill, e.g. cpu:2:bitflip:rate=0.05 (repeatable; also SDC_INJECT).")
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
    db_url: str | None,
) -> None:
    """Probe this node's chips and store a sweep. Exit 0 healthy, 1 fault found, 2 error."""
    if db_url:
        app.db, app._settings = db_url, None
    try:
        faults = parse_faults(inject)
    except FaultSpecError as exc:
        fail(str(exc))
    try:
        chips = discover(devices)
    except DeviceError as exc:
        fail(str(exc))
    probes = _select_probes(probe_names)
    known = {c.name for c in chips}
    stray = sorted({f.chip for f in faults} - known)
    if stray:
        fail(f"--inject names {', '.join(stray)}, which this sweep does not probe (chips: {', '.join(sorted(known))})")

    store = app.store()
    engine = _engine_or_outbox(app, store)
    if engine is not None:
        abandoned = mark_abandoned_sweeps(engine, hostname())
        if abandoned:
            app.err.print(f"marked {len(abandoned)} earlier sweep(s) on this host incomplete (their process had died)")
        from sdc.store.evidence import probation_chip_ids

        on_probation = set(probation_chip_ids(engine))
        chips = probation_first(chips, on_probation)
        for handle in chips:
            if handle.chip.chip_id in on_probation:
                app.err.print(f"{handle.name} ({handle.chip.chip_id}) is on probation after release: tested first")
    fault_counts, case_seconds = {}, {}
    if budget is not None and engine is not None:
        from sdc.store.history import case_seconds as measured, mismatch_counts

        fault_counts, case_seconds = mismatch_counts(engine), measured(engine)
    options = SweepOptions(
        seed=seed,
        repeats=repeats,
        faults=faults,
        case_timeout_s=case_timeout,
        budget_s=budget,
        fault_counts=fault_counts,
        case_seconds=case_seconds,
        reference_cache=str(app.settings.data_dir / "reference-cache"),
        probe_settings={"burn": {"duration_s": duration}},
    )

    deliveries = []

    def sink(records):
        deliveries.append(store.deliver(records))

    show_progress = not app.json_output and app.err.is_terminal
    with _progress(app, show_progress) as bar, _stop_on_signals() as stop:
        callback = None
        if bar is not None:
            total = sum(len(chip_plan(probes, suite, c, options)) for c in chips)
            callback = _advance(bar, bar.add_task("starting", total=total))
        summary = run_sweep(
            chips, probes, suite, sink, seed=seed, repeats=repeats, progress=callback, options=options, stop=stop
        )
    if summary.sweep.status == "aborted":
        app.err.print(f"[yellow]sweep aborted: {summary.sweep.message}; it will not count as evidence[/]")
    spooled = sum(d.spooled for d in deliveries)
    if app.json_output:
        app.emit_json(_as_json(summary, spooled))
    else:
        _print_table(app, summary, suite)
        if spooled:
            app.err.print(
                f"[yellow]database unavailable: {spooled} records kept in the outbox {store.outbox.directory}; "
                "'sdc flush' (or the next successful write) delivers them[/]"
            )
        else:
            app.out.print(f"stored in {app.store().url.split('://')[0]} database: {_where(app)}")
    sys.exit(int(summary.exit_code))


def _engine_or_outbox(app: AppContext, store):
    """The store's engine; None (results go to the outbox) when the database is unreachable.

    A sweep on a node whose database is down still runs: evidence is spooled and delivered
    later. A database that answers with the wrong schema is refused before any work.
    """
    from sqlalchemy.exc import OperationalError

    try:
        return store.engine()
    except OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0][:200]
        app.err.print(f"[yellow]database unreachable ({reason}); results will be kept in the outbox {store.outbox.directory}[/]")
        return None


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
    from sqlalchemy.engine import make_url

    return make_url(app.settings.database_url).render_as_string(hide_password=True)
