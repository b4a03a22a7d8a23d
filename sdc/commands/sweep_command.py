"""``sdc sweep``: run probes on this node's chips and store the evidence."""

from __future__ import annotations

import sys

import click
from rich.table import Table

from sdc.commands.context import AppContext, fail, handles_errors, pass_app
from sdc.devices import DeviceError, discover, hostname
from sdc.store.sweeps import mark_abandoned_sweeps
from sdc.sweep import run_sweep


@click.command("sweep")
@click.option("--suite", default="quick", show_default=True, type=click.Choice(["quick", "standard", "burn"]))
@click.option("--devices", help="Chips to probe, e.g. cuda:0,cuda:1 (default: all found). cpu:0,cpu:1 are virtual test chips.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for probe inputs; cohorts compare equal seeds.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1, 1000), help="Runs per case, compared bit for bit.")
@pass_app
@handles_errors
def sweep_command(app: AppContext, suite: str, devices: str | None, seed: int, repeats: int) -> None:
    """Probe this node's chips and store a sweep. Exit 0 healthy, 1 fault found, 2 error."""
    from probes.registry import all_probes

    try:
        chips = discover(devices)
    except DeviceError as exc:
        fail(str(exc))
    store = app.store()
    engine = store.engine()  # refuses a database that is not at schema head, before any work
    abandoned = mark_abandoned_sweeps(engine, hostname())
    if abandoned:
        app.err.print(f"marked {len(abandoned)} earlier sweep(s) on this host incomplete (their process had died)")

    deliveries = []

    def sink(records):
        deliveries.append(store.deliver(records))

    summary = run_sweep(chips, list(all_probes().values()), suite, sink, seed=seed, repeats=repeats)
    spooled = sum(d.spooled for d in deliveries)
    if app.json_output:
        app.emit_json(
            {
                "sweep_id": summary.sweep.sweep_id,
                "status": summary.sweep.status,
                "exit_code": int(summary.exit_code),
                "chips": [
                    {"name": c.name, "chip_id": c.chip_id, "statuses": dict(c.statuses), "failures": c.failures}
                    for c in summary.chips
                ],
                "spooled": spooled,
            }
        )
    else:
        table = Table(title=f"sweep {summary.sweep.sweep_id[:12]} ({suite}) on {summary.sweep.host}")
        for column in ("chip", "chip id", "ok", "mismatch", "error", "timeout", "skipped", "verdict"):
            table.add_column(column)
        for c in summary.chips:
            verdict = {0: "[green]healthy[/]", 1: "[red]FAULT[/]", 2: "[yellow]unknown[/]"}[int(c.exit_code)]
            table.add_row(
                c.name, c.chip_id, *(str(c.statuses[s]) for s in ("ok", "mismatch", "error", "timeout", "skipped")), verdict
            )
        app.out.print(table)
        for c in summary.chips:
            for failure in c.failures:
                app.out.print(f"  {c.name}: {failure}")
        if spooled:
            last = next(d for d in reversed(deliveries) if d.spooled)
            app.err.print(f"[yellow]{last.message}[/]")
        else:
            app.out.print(f"stored in {app.store().url.split('://')[0]} database: {_where(app)}")
    sys.exit(int(summary.exit_code))


def _where(app: AppContext) -> str:
    from sqlalchemy.engine import make_url

    return make_url(app.settings.database_url).render_as_string(hide_password=True)
