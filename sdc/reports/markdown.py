"""The report as Markdown (for tickets and chat): summary, flagged chips, evidence, commands.

Every data string goes through ``md_text``; commands go into ``<pre>`` blocks with HTML
escaping rather than code fences, so a value containing backticks cannot end the block.
"""

from __future__ import annotations

from sdc.records import format_time
from sdc.reports.escape import html_text, md_text
from sdc.reports.model import ChipReport, FleetReport


def _when(value) -> str:
    return format_time(value)[:19].replace("T", " ") + " UTC" if value else "never"


def _num(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def _chip_section(chip: ChipReport) -> list[str]:
    ident = chip.identity
    lines = [
        f"### {md_text(ident.host)} #{ident.index}: {md_text(ident.chip_id)}",
        "",
        f"- **model** {md_text(ident.model)} ({md_text(ident.vendor)}), stack {md_text(ident.stack_hash or '-')}: "
        + md_text(", ".join(f"{k} {v}" for k, v in sorted(ident.stack.items())) or "-"),
        f"- **state** {md_text(chip.state)}" + (f" (dry run proposes {md_text(chip.proposed_state)})" if chip.proposed_state else "")
        + (" (held by the circuit breaker: drains nothing)" if chip.provenance and chip.provenance.held_by_breaker else ""),
    ]
    if chip.provenance:
        p = chip.provenance
        lines.append(
            f"- **provenance** {md_text(p.from_state)} → {md_text(p.to_state)} by {md_text(p.actor)} at {_when(p.at)}, "
            f"{'dry run' if p.dry_run else 'applied'}: {md_text(p.reason)}"
        )
    lines.append(f"- **action** {md_text(chip.action.kind)}: {md_text(chip.action.why)}")
    if chip.action.commands:
        lines += ["", "<pre><code>" + "\n".join(html_text(c) for c in chip.action.commands) + "</code></pre>"]
    if chip.verdicts:
        lines += ["", "| verdict | severity | k of n | statistic | p | first seen | last seen | summary |", "|---|---|---|---|---|---|---|---|"]
        for v in chip.verdicts:
            lines.append(
                f"| {md_text(v.kind)} | {md_text(v.severity)} | {v.k} of {v.n} | {_num(v.statistic)} | {_num(v.p_value)} "
                f"| {_when(v.first_seen)} | {_when(v.last_seen)} | {md_text(v.summary)} |"
            )
    if chip.evidence:
        lines += [
            "",
            "| probe | case | dtype | seed | expected | observed | first seen | last seen | times | reproduced |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for e in chip.evidence:
            lines.append(
                f"| {md_text(e.probe)} | {md_text(e.case)} | {md_text(e.dtype)} | {e.seed} | {md_text(e.expected_digest or '-')} "
                f"| {md_text(e.observed_digest or '-')} | {_when(e.first_seen)} | {_when(e.last_seen)} | {e.occurrences} "
                f"| {'yes' if e.reproduced else 'no'} |"
            )
    lines.append("")
    return lines


def render_markdown(report: FleetReport) -> str:
    counts = report.state_counts
    lines = [
        "# sdc quarantine report",
        "",
        f"Generated {_when(report.generated_at)} from {md_text(report.source or 'the store')}; "
        f"last complete sweep {_when(report.last_sweep_at)}.",
        "",
        f"**{len(report.chips)} chips on {len(report.hosts)} hosts:** " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ".",
        "",
    ]
    flagged = report.flagged
    if not flagged:
        lines += ["No chip is flagged.", ""]
        return "\n".join(lines)
    lines += [
        f"## Flagged chips ({len(flagged)})",
        "",
        "| host | index | chip | model | state | verdicts | action |",
        "|---|---|---|---|---|---|---|",
    ]
    for chip in flagged:
        verdicts = ", ".join(f"{v.kind} {v.severity}" for v in chip.verdicts) or "-"
        lines.append(
            f"| {md_text(chip.identity.host)} | {chip.identity.index} | {md_text(chip.identity.chip_id)} | {md_text(chip.identity.model)} "
            f"| {md_text(chip.state)}{' (dry run: ' + md_text(chip.proposed_state) + ')' if chip.proposed_state else ''} | {md_text(verdicts)} | {md_text(chip.action.kind)} |"
        )
    lines += ["", "## Details", ""]
    for chip in flagged:
        lines += _chip_section(chip)
    return "\n".join(lines)
