"""``sdc analyze``, ``sdc quarantine ...``, ``sdc status`` and ``sdc simulate``: thin wrappers that
parse, call ``sdc.quarantine.pipeline`` / ``sdc.quarantine.policy`` / ``sdc.sim.fleet``, print, exit."""

from __future__ import annotations

import sys
from datetime import datetime

import click

from sdc.cli.context import AppContext, fail, handles_errors, pass_app
from sdc.exitcodes import ExitCode
from sdc.records import parse_time, utcnow
from sdc.sim.kinds import FAULT_KINDS

SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "dim"}


def _since(value: str | None, command: str) -> datetime | None:
    if not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        fail(f"{command}: --since {value!r} is not an ISO 8601 time such as 2026-11-01 or 2026-11-01T12:00Z")
    return None


@click.command("analyze")
@click.option("--since", help="Only evidence observed at or after this ISO 8601 time (default: [analysis] max_age_days ago).")
@click.option("--dry-run", is_flag=True, help="Show what would change; store nothing.")
@click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=600.0, show_default=True,
              help="Seconds to wait for another analysis of the same database to finish.")
@pass_app
@handles_errors
def analyze_command(app: AppContext, since: str | None, dry_run: bool, wait_s: float) -> None:
    """Analyse the stored evidence, store verdicts and apply the quarantine policy.

    Exits 1 if any chip became quarantined or suspect on its own evidence, 0 otherwise (2 on errors, or when the
    circuit breaker held quarantines back and nothing else changed). One analysis runs at a
    time per database: a second waits for the first, up to --wait seconds.
    """
    from sdc.config import ConfigError
    from sdc.quarantine.pipeline import analyze_store

    since_at = _since(since, "analyze")
    try:
        report = analyze_store(app.store(), app.settings, since_at, dry_run, lock_timeout=wait_s)
    except ConfigError as exc:
        fail(str(exc))
        return
    if app.json_output:
        app.emit_json(report.to_json_dict())
        sys.exit(int(report.exit_code))
    out, err = app.out, app.err
    prefix = "[bold]DRY RUN[/bold] (nothing stored): " if dry_run else ""
    out.print(f"{prefix}analysed {report.results:,} probe results of {report.chips:,} chips and {report.job_events:,} job events")
    from sdc.analysis.slow import SYNC_JOB_SLOWDOWN

    for floor in report.slow_floors:
        out.print(_t(floor.sentence(SYNC_JOB_SLOWDOWN)))
    if report.breaker_tripped:
        err.print(f"[bold red]{_t(report.breaker_message)}[/bold red]")
    if not report.verdicts:
        out.print("no verdicts: every chip is consistent with its peers")
    for v in report.verdicts:
        out.print(f"[{SEVERITY_STYLE[v.severity]}]{v.severity:8s}[/] {v.kind:12s} {_t(v.chip_id)}  k={v.k}/{v.n}  {_t(v.summary)}")
    verb = "would move" if dry_run else "moved"
    for e in report.transitions:
        out.print(f"{verb} {_t(e.chip_id)}: {e.from_state} -> [bold]{e.to_state}[/bold] ({_t(e.reason[:160])})")
    if not report.transitions:
        out.print("no quarantine state changes")
    sys.exit(int(report.exit_code))


@click.group("quarantine")
def quarantine_group() -> None:
    """List, show, release, retire and replace chips held by the quarantine policy."""


def _t(value: object) -> str:
    """A data string for rich: markup escaped, control characters (ESC, BEL) replaced."""
    from rich.markup import escape

    from sdc.safe_text import terminal_text

    return escape(terminal_text(value))


@quarantine_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "show_all", is_flag=True, help="Also chips back to healthy.")
@pass_app
@handles_errors
def quarantine_list(app: AppContext, as_json: bool, show_all: bool) -> None:
    """Chips that are suspect, quarantined, released (on probation) or retired."""
    from sdc.quarantine.states import current_states, is_breaker_hold, is_replaced
    from sdc.store.reader import quarantine_events

    current = current_states(quarantine_events(app.store().engine()))
    rows = [s.event for s in current.values() if show_all or s.state != "healthy"]
    rows.sort(key=lambda e: ("quarantined suspect released retired healthy".split().index(e.to_state), e.chip_id))
    if as_json or app.json_output:
        app.emit_json([
            {"chip_id": e.chip_id, "state": e.to_state, "since": e.at.isoformat(), "actor": e.actor, "reason": e.reason,
             "verdict_id": e.verdict_id, "held_by_breaker": is_breaker_hold(e.details), "replaced": is_replaced(e.details)}
            for e in rows
        ])
        return
    if not rows:
        click.echo("no chip is suspect, quarantined, released or retired")
        return
    for e in rows:
        note = " [yellow](held by the circuit breaker: drains nothing)[/yellow]" if is_breaker_hold(e.details) else ""
        note += " (replaced: holds no node)" if is_replaced(e.details) else ""
        app.out.print(f"{_t(e.chip_id)}  [bold]{e.to_state:11s}[/bold]{note} since {e.at:%Y-%m-%d %H:%M}Z by {_t(e.actor)}: {_t(e.reason[:160])}")


def _resolve_chip(engine, chip: str, command: str) -> str:
    """The chip id ``chip`` names: the id itself, or a unique prefix of one (``sdc check`` shortens ids)."""
    from sqlalchemy import select, union

    from sdc.store.models import ChipRow, QuarantineEventRow, VerdictRow

    ids = union(*(select(t.c.chip_id) for t in (ChipRow.__table__, QuarantineEventRow.__table__, VerdictRow.__table__))).subquery()
    with engine.connect() as connection:
        if connection.execute(select(ids.c.chip_id).where(ids.c.chip_id == chip)).first():
            return chip
        escaped = chip.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        found = [r[0] for r in connection.execute(select(ids.c.chip_id).where(ids.c.chip_id.like(escaped + "%", escape="\\")).limit(6))]
    if len(found) == 1:
        return found[0]
    if not found:
        fail(f"quarantine {command}: no chip named {_plain(chip)} (nor one whose id starts so); see 'sdc quarantine list --all'")
    shown = ", ".join(_plain(c) for c in found[:5]) + (", ..." if len(found) > 5 else "")
    fail(f"quarantine {command}: {_plain(chip)} is the start of several chip ids ({shown}); give more of the id")
    return chip


def _plain(value: object) -> str:
    from sdc.safe_text import terminal_text

    return terminal_text(value)


@quarantine_group.command("show")
@click.argument("chip")
@pass_app
@handles_errors
def quarantine_show(app: AppContext, chip: str) -> None:
    """A chip's state, its full transition history and its verdicts of the fleet's latest analysis (CHIP may be a unique prefix)."""
    from sqlalchemy import select, text

    from sdc.quarantine.latest import IN_LATEST_ANALYSIS
    from sdc.quarantine.states import current_states, is_breaker_hold
    from sdc.store.models import VerdictRow
    from sdc.store.reader import quarantine_events

    engine = app.store().engine()
    chip = _resolve_chip(engine, chip, "show")
    events = quarantine_events(engine, chip)
    table = VerdictRow.__table__
    with engine.connect() as connection:
        verdicts = connection.execute(
            select(table.c.created_at, table.c.kind, table.c.severity, table.c.k, table.c.n, table.c.summary)
            .where(table.c.chip_id == chip, text(IN_LATEST_ANALYSIS))
            .order_by(table.c.created_at.desc(), table.c.verdict_id)
        ).all()
    current = current_states(events).get(chip)
    state = current.state if current else "healthy"
    held = bool(current) and is_breaker_hold(current.event.details)
    if app.json_output:
        app.emit_json({"chip_id": chip, "state": state, "held_by_breaker": held, "history": [e.to_json_dict() for e in events],
                       "verdicts": [dict(r._mapping) for r in verdicts]})
        return
    app.out.print(f"{_t(chip)}: [bold]{state}[/bold]" + (" (held by the circuit breaker: drains nothing)" if held else ""))
    for e in events:
        app.out.print(f"  {e.at:%Y-%m-%d %H:%M}Z {e.from_state} -> {e.to_state} by {_t(e.actor)}: {_t(e.reason[:200])}")
    if verdicts:
        app.out.print("verdicts of the latest analysis:")
    for r in verdicts:
        app.out.print(f"  {r.created_at:%Y-%m-%d %H:%M}Z {r.severity} {r.kind} k={r.k}/{r.n}: {_t(r.summary[:200])}")
    if not events and not verdicts:
        app.out.print("  no transitions and no verdicts recorded for this chip")


def _manual(app: AppContext, chip: str, by: str, reason: str, action, command: str) -> None:
    from sdc.quarantine.policy import QuarantineError
    from sdc.quarantine.states import state_names
    from sdc.store.reader import quarantine_events

    store = app.store()
    chip = _resolve_chip(store.engine(), chip, command)
    try:
        event = action(state_names(quarantine_events(store.engine())), chip, by, reason, utcnow())
    except QuarantineError as exc:
        fail(_plain(exc))
        return
    delivery = store.deliver([event])
    click.echo(f"{_plain(chip)}: {event.from_state} -> {event.to_state} by {_plain(by)}" + ("" if delivery.stored else f" ({delivery.message})"))


@quarantine_group.command("release")
@click.argument("chip")
@click.option("--by", required=True, help="Who releases the chip (kept in its history).")
@click.option("--reason", required=True, help="Why (kept in its history).")
@pass_app
@handles_errors
def quarantine_release(app: AppContext, chip: str, by: str, reason: str) -> None:
    """Release CHIP: it goes on probation, is re-tested first, and is judged only on evidence gathered from now on."""
    from sdc.quarantine.policy import release

    _manual(app, chip, by, reason, release, "release")


@quarantine_group.command("retire")
@click.argument("chip")
@click.option("--by", required=True, help="Who retires the chip.")
@click.option("--reason", required=True, help="Why.")
@pass_app
@handles_errors
def quarantine_retire(app: AppContext, chip: str, by: str, reason: str) -> None:
    """Retire CHIP for good (its history stays); it holds its node while it is still in the machine."""
    from sdc.quarantine.policy import retire

    _manual(app, chip, by, reason, retire, "retire")


@quarantine_group.command("replace")
@click.argument("chip")
@click.option("--by", required=True, help="Who replaced the chip.")
@click.option("--reason", required=True, help="Why, e.g. the RMA ticket.")
@pass_app
@handles_errors
def quarantine_replace(app: AppContext, chip: str, by: str, reason: str) -> None:
    """Record that CHIP was physically removed (an RMA swap): retired, and it no longer holds its node."""
    from sdc.quarantine.policy import replace_chip

    _manual(app, chip, by, reason, replace_chip, "replace")


@click.command("status")
@pass_app
@handles_errors
def status_command(app: AppContext) -> None:
    """Fleet summary: chips by state, sweeps, evidence, the latest analysis. Exits 1 if any chip is quarantined (suspect only warns)."""
    from sqlalchemy import func, select

    from sdc.quarantine.states import state_names
    from sdc.store.models import ChipRow, ProbeResultRow, SweepRow, VerdictRow
    from sdc.store.reader import quarantine_events

    engine = app.store().engine()
    states = state_names(quarantine_events(engine))
    with engine.connect() as connection:
        chips = connection.execute(select(func.count()).select_from(ChipRow.__table__)).scalar_one()
        sweeps = dict(connection.execute(select(SweepRow.status, func.count()).group_by(SweepRow.status)).all())
        last_sweep = connection.execute(select(func.max(SweepRow.started_at))).scalar_one()
        results = connection.execute(select(func.count()).select_from(ProbeResultRow.__table__)).scalar_one()
        last = connection.execute(select(VerdictRow.analysis_id, VerdictRow.created_at).order_by(VerdictRow.created_at.desc()).limit(1)).first()
    counts = {s: 0 for s in ("healthy", "suspect", "quarantined", "released", "retired")}
    for s in states.values():
        counts[s] += 1
    counts["healthy"] = chips - sum(v for k, v in counts.items() if k != "healthy")
    summary = {"chips": chips, "states": counts, "sweeps": sweeps, "last_sweep": last_sweep.isoformat() if last_sweep else None,
               "probe_results": results, "last_verdict_at": last.created_at.isoformat() if last else None}
    code = ExitCode.FAULT if counts["quarantined"] else ExitCode.HEALTHY  # a suspect chip drains nothing
    if app.json_output:
        app.emit_json(summary)
    else:
        app.out.print(f"fleet: {chips:,} chips — " + ", ".join(f"{v:,} {k}" for k, v in counts.items()))
        app.out.print("sweeps: " + (", ".join(f"{v:,} {k}" for k, v in sorted(sweeps.items())) or "none") +
                      (f"; last started {last_sweep:%Y-%m-%d %H:%M}Z" if last_sweep else ""))
        app.out.print(f"evidence: {results:,} probe results; last verdict " + (f"{last.created_at:%Y-%m-%d %H:%M}Z" if last else "never (run 'sdc analyze')"))
    sys.exit(int(code))


@click.command("simulate")
@click.option("--chips", type=click.IntRange(2, 1_000_000), default=64, show_default=True)
@click.option("--chips-per-host", type=click.IntRange(1, 64), default=8, show_default=True)
@click.option("--sweeps", type=click.IntRange(1, 10_000), default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--faults", default="", help=f"Planted faults, e.g. 'persistent=1,slow=2' (kinds: {', '.join(FAULT_KINDS)}).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, writable=True), help="JSON lines for 'sdc ingest'.")
@click.option("--truth", type=click.Path(dir_okay=False, writable=True), help="Ground-truth JSON file (planted faults per chip).")
@click.option("--onset", type=int, default=None, help="Faults start at a random sweep up to this one (default: half the sweeps).")
def simulate_command(chips, chips_per_host, sweeps, seed, faults, output, truth, onset) -> None:
    """Write a synthetic fleet with planted faults as JSON lines (its last sweep ends about now)."""
    from sdc.sim.fleet import FleetSpec, SimulatedFleet, parse_faults

    try:
        planted = parse_faults(faults)
    except ValueError as exc:
        fail(f"simulate: --faults: {exc}")
        return
    if sum(planted.values()) > chips:
        fail(f"simulate: {sum(planted.values())} planted faults but only {chips} chips")
    fleet = SimulatedFleet(FleetSpec(chips=chips, chips_per_host=chips_per_host, sweeps=sweeps, faults=planted, onset_max=onset), seed=seed)
    shift = utcnow().timestamp() - 3600 - float(fleet.sweep_time.max())
    count = fleet.write_jsonl(output, time_shift=shift)
    if truth:
        fleet.write_truth(truth)
    click.echo(f"wrote {count:,} records ({chips} chips, {sweeps} sweeps, {sum(planted.values())} planted faults) to {output}"
               + (f"; ground truth in {truth}" if truth else ""))
