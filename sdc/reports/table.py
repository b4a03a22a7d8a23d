"""The report for the terminal (rich): fleet counts, then one row per flagged chip.

Data strings go into ``rich.text.Text`` objects, never into markup, so a chip or host name
such as ``[red]x[/]`` prints literally, and lose their control characters first (``terminal_text``):
an ESC or BEL in a chip id never reaches the terminal.
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from sdc.records import format_time
from sdc.reports.model import FleetReport
from sdc.safe_text import terminal_text as t

STATE_STYLE = {"healthy": "green", "suspect": "yellow", "quarantined": "red", "released": "cyan", "retired": "magenta"}


def _when(value) -> str:
    return format_time(value)[:19].replace("T", " ") if value else "never"


def table_renderables(report: FleetReport) -> list[Any]:
    counts = report.state_counts
    summary = Text()
    summary.append(f"{len(report.chips)} chips on {len(report.hosts)} hosts: ")
    summary.append_text(
        Text(", ").join(Text(f"{n} {s}", style=STATE_STYLE[s] if n else "dim") for s, n in counts.items())
    )
    summary.append(f"\nlast complete sweep: {_when(report.last_sweep_at)}; report from {t(report.source or 'the store')}")
    out: list[Any] = [summary]
    flagged = report.flagged
    if not flagged:
        out.append(Text("no chip is flagged", style="green"))
        return out
    table = Table(title=f"{len(flagged)} flagged chip(s)", title_justify="left", show_lines=True)
    for column in ("host", "idx", "chip", "model", "state", "verdicts", "evidence", "action"):
        table.add_column(column, overflow="fold")
    for chip in flagged:
        ident = chip.identity
        state = Text(chip.state, style=STATE_STYLE.get(chip.state, ""))
        if chip.proposed_state:
            state.append(f"\n(dry run: {chip.proposed_state})", style="dim")
        if chip.provenance and chip.provenance.held_by_breaker:
            state.append("\n(breaker)", style="yellow")
        verdicts = Text("\n").join(
            Text(t(f"{v.kind} {v.severity} {v.k}/{v.n}") + (f" stat {v.statistic:.3g}" if v.statistic is not None else ""))
            for v in chip.verdicts
        ) or Text("-")
        evidence = Text("\n").join(
            Text(t(f"{e.probe}/{e.case} {e.dtype} x{e.occurrences}") + (" reproduced" if e.reproduced else ""))
            for e in chip.evidence[:4]
        ) or Text("-")
        if len(chip.evidence) > 4:
            evidence.append(f"\n+{len(chip.evidence) - 4} more")
        action = Text(chip.action.kind.replace("_", " "), style="bold")
        table.add_row(Text(t(ident.host)), Text(str(ident.index)), Text(t(ident.chip_id)), Text(t(ident.model)), state, verdicts, evidence, action)
    out.append(table)
    for chip in flagged:
        if chip.action.commands:
            heading = Text(f"\n{chip.action.kind.replace('_', ' ')} ", style="bold")
            heading.append(t(f"{chip.identity.host} #{chip.identity.index} {chip.identity.chip_id}"), style="")
            heading.append(f": {t(chip.action.why)}", style="dim")
            if chip.provenance and chip.provenance.held_by_breaker:
                heading.append(" (held by the circuit breaker: drains nothing)", style="yellow")
            out.append(heading)
            out.extend(Text("  " + t(command)) for command in chip.action.commands)
    return out


def render_table(report: FleetReport, width: int = 140, color: bool = False) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=color, color_system="standard" if color else None, highlight=False)
    console.print(Group(*table_renderables(report)))
    return buffer.getvalue()
