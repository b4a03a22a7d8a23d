"""``sdc agent``, ``sdc report``, ``sdc check`` and ``sdc export slurm|k8s|prometheus``.

Thin: parse, call the plain functions in sdc.agent.agent, sdc.reports and sdc.handoffs, print,
exit. ``sdc check`` runs every minute on every node, so this module imports nothing heavy at
module level and ``check`` reads the store without the schema check's Alembic import.
"""

from __future__ import annotations

import logging
import sys

import click

from sdc.cli.context import AppContext, fail, handles_errors, pass_app
from sdc.config import safe_url
from sdc.exitcodes import ExitCode

# ---------------------------------------------------------------------------------------
# sdc agent


@click.command("agent")
@click.option("--sweep", "sweep", metavar="CRON", help="Sweep this node on this crontab schedule, e.g. '0 3 * * 0' (Sunday 03:00).")
@click.option("--sweep-jitter", type=click.IntRange(0), metavar="SECONDS", help="Random delay of 0..SECONDS added to each sweep.")
@click.option("--analyze", "analyze", metavar="CRON", help="Analyse the fleet's evidence on this schedule (central role).")
@click.option("--report", "report", metavar="CRON", help="Write the quarantine report on this schedule (central role).")
@click.option("--suite", type=click.Choice(["quick", "standard", "burn"]), help="Probe suite for scheduled sweeps [quick].")
@click.option("--devices", help="Chips to sweep, e.g. cuda:0,cuda:1 (default: all found).")
@click.option("--repeats", type=click.IntRange(1, 1000), help="Runs per case [3].")
@click.option("--report-path", type=click.Path(dir_okay=False), help="Where the report job writes [<data dir>/report.html].")
@click.option("--report-format", type=click.Choice(["html", "json", "markdown", "table"]), help="Report job format [html].")
@click.option("--misfire-grace-time", type=click.IntRange(1), metavar="SECONDS", help="How late a missed run may still start [3600].")
@click.option("--timezone", help="Time zone the crontab strings are read in [local time, as cron].")
@click.option("--state-file", type=click.Path(dir_okay=False), help="Where last run times are kept [<data dir>/agent-state.json].")
@click.option("--run-now", is_flag=True, default=None, help="Also run every job once right away.")
@click.option("--no-busy-check", "busy_check", flag_value=False, default=None, help="Sweep even when the chips are busy.")
@pass_app
@handles_errors
def agent_command(app: AppContext, **flags) -> None:
    """Run scheduled sweeps (and analyses and reports) until SIGTERM. Settings: [agent] in the config file."""
    from sdc.agent.agent import Agent
    from sdc.agent.config import agent_config

    config = agent_config(app.settings, {k: v for k, v in flags.items() if v is not None})
    root = logging.getLogger()
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)
    for handler in root.handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("alembic").setLevel(logging.WARNING)  # schema checks are not news
    sys.exit(Agent(app.settings, config).run())


# ---------------------------------------------------------------------------------------
# sdc report


@click.command("report")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown", "html"]), default="table", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE (atomically) instead of stdout.")
@click.option("--host", "hosts", multiple=True, help="Only these hosts (repeatable).")
@pass_app
@handles_errors
def report_command(app: AppContext, fmt: str, output: str | None, hosts: tuple[str, ...]) -> None:
    """The quarantine report: every flagged chip, its evidence, and what to do. Exit 1 if any chip is flagged."""
    from sdc.files import atomic_write
    from sdc.reports import build_report, render

    store = app.store()
    report = build_report(store.engine(), source=safe_url(store.url), hosts=hosts or None)
    if output:
        from pathlib import Path

        atomic_write(Path(output), render(report, fmt))
        click.echo(f"{fmt} report of {len(report.chips)} chips ({len(report.flagged)} flagged) written to {output}", err=True)
    elif fmt == "table":
        from sdc.reports.table import table_renderables

        for renderable in table_renderables(report):
            app.out.print(renderable)
    else:
        sys.stdout.write(render(report, fmt))
    sys.exit(int(ExitCode.FAULT if report.flagged else ExitCode.HEALTHY))


# ---------------------------------------------------------------------------------------
# sdc check


@click.command("check")
@click.option("--format", "fmt", type=click.Choice(["text", "npd", "nhc"]), default="text", show_default=True)
@click.option("--host", help="Host to check [$SDC_HOSTNAME, else this machine's name].")
@pass_app
def check_command(app: AppContext, fmt: str, host: str | None) -> None:
    """This node's stored verdict in one line (<= 80 chars). Exit 0 healthy, 1 fault, 2 unknown. Never runs probes."""
    from sdc.handoffs.check import CheckResult, decide, format_line

    host = host or _this_host()
    try:
        result = decide(host, _statuses(app, [host]).get(host, []))
    except Exception as exc:  # any failure to read is "unknown", never "fault"
        result = CheckResult(ExitCode.UNKNOWN, _read_error(exc))
    click.echo(format_line(result, fmt))
    sys.exit(int(result.code))


def _this_host() -> str:
    from sdc.handoffs.state import this_host

    return this_host()


def _statuses(app: AppContext, hosts):
    """Chip states per host, read without sdc.store's schema check (the fast path)."""
    from sdc.handoffs.state import read_statuses

    return read_statuses(app.settings.database_url, hosts)


def _read_error(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return str(exc)
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    if "no such table" in first or ("does not exist" in first and "relation" in first):
        return "no sdc schema in the database, run sdc db upgrade"
    return f"cannot read the store: {first}"


# ---------------------------------------------------------------------------------------
# sdc export slurm | k8s | prometheus


def _print_plan(app: AppContext, steps, skips, apply: bool, client) -> None:
    if app.json_output:
        app.emit_json(
            {
                "apply": apply,
                "steps": [{"node": s.node, "argv": list(s.argv), "why": s.why} for s in steps],
                "skipped": [{"node": s.node, "why": s.why} for s in skips],
            }
        )
    from sdc.safe_text import terminal_text as t

    # Comments carry no control character, so a newline in a name cannot start a command of
    # its own when the plan is piped to sh; the commands are quoted word by word.
    for skip in skips:
        click.echo(f"# {t(skip.node)}: {t(skip.why)}", err=app.json_output)
    for step in steps:
        if apply:
            client.run(step.argv)
            click.echo(f"ran: {step.shell}", err=app.json_output)
        elif not app.json_output:
            click.echo(f"{step.shell}   # {t(step.why)}")
    if not steps:
        click.echo("# nothing to change", err=app.json_output)
    elif not apply:
        click.echo("# printed only; run again with --apply to execute", err=True)


def _handoff(app: AppContext, hosts, planner, client, apply: bool) -> None:
    from sdc.handoffs.commands import HandoffError

    try:
        statuses = _statuses(app, list(hosts) or None)
        steps, skips = planner(statuses, client)
        _print_plan(app, steps, skips, apply, client)
    except HandoffError as exc:
        fail(str(exc))


@click.command("slurm")
@click.option("--apply", is_flag=True, help="Run the scontrol commands (default: print them).")
@click.option("--host", "hosts", multiple=True, help="Only these nodes (repeatable; default every node sdc knows).")
@pass_app
@handles_errors
def export_slurm(app: AppContext, apply: bool, hosts: tuple[str, ...]) -> None:
    """Drain nodes with quarantined chips (Reason 'SDC: ...'), resume released ones; never touches other reasons."""
    from sdc.handoffs import slurm

    client = slurm.CommandSlurm()
    _handoff(app, hosts, lambda statuses, c: slurm.plan(statuses, c.node_status(sorted(statuses))), client, apply)


@click.command("k8s")
@click.option("--apply", is_flag=True, help="Run the kubectl commands (default: print them).")
@click.option("--host", "hosts", multiple=True, help="Only these nodes (repeatable; default every node sdc knows).")
@pass_app
@handles_errors
def export_k8s(app: AppContext, apply: bool, hosts: tuple[str, ...]) -> None:
    """Cordon and taint (sdc.io/quarantined=<chip>:NoSchedule) nodes with quarantined chips; undo on release."""
    from sdc.handoffs import k8s

    client = k8s.CommandKube()
    _handoff(app, hosts, lambda statuses, c: k8s.plan(statuses, c.nodes()), client, apply)


@click.command("prometheus")
@click.option("--textfile", "directory", type=click.Path(file_okay=False), help="node_exporter textfile directory.")
@click.option("--apply", is_flag=True, help="Write DIR/sdc.prom (atomically); default: print the metrics.")
@click.option("--all-hosts", is_flag=True, help="Every host's chips (central exporter), not only this node's.")
@pass_app
@handles_errors
def export_prometheus(app: AppContext, directory: str | None, apply: bool, all_hosts: bool) -> None:
    """Chip states, probe-result counts, last sweep time and verdict scores as Prometheus metrics."""
    from sdc.handoffs.prometheus import (
        TEXTFILE_NAME,
        exposition,
        read_metrics,
        write_textfile,
    )
    from sdc.store.engine import make_engine

    if apply and not directory:
        fail("export prometheus: --apply needs --textfile DIR (node_exporter's --collector.textfile.directory)")
    store = app.store()
    store.engine()  # refuses a database not at schema head
    engine = make_engine(app.settings.database_url)
    try:
        from sdc.handoffs.state import node_statuses

        statuses = node_statuses(engine, None if all_hosts else [_this_host()])
        metrics = read_metrics(engine, statuses)
    finally:
        engine.dispose()
        store.dispose()
    if apply:
        try:
            path = write_textfile(directory, metrics)
        except FileNotFoundError as exc:
            fail(f"export prometheus: {exc}")
        click.echo(f"wrote {sum(len(v) for v in statuses.values())} chips' metrics to {path}", err=True)
        return
    sys.stdout.write(exposition(metrics))
    if directory:
        click.echo(f"# printed only; --apply writes {directory}/{TEXTFILE_NAME}", err=True)
