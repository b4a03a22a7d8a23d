"""The report as one self-contained HTML page: inline CSS, inline SVG plots, no scripts.

Nothing is fetched: no fonts, scripts, images or styles from anywhere, and a
Content-Security-Policy forbids it, so the page can be mailed, attached to a ticket or opened
on an air-gapped console. Every string from the data goes through ``html_text``.
"""

from __future__ import annotations

from sdc.records import format_time
from sdc.reports import plots
from sdc.reports.escape import html_text as h
from sdc.reports.model import ChipReport, FleetReport
from sdc.reports.precision import precision_html

CSS = """
:root { --fg:#1b1f24; --muted:#57606a; --line:#d0d7de; --bg:#ffffff; --panel:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       background: var(--bg); margin: 0 auto; max-width: 1200px; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 0; display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap; }
.muted { color: var(--muted); }
code, pre, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--panel); font-weight: 600; white-space: nowrap; }
td.id { word-break: break-all; }
td.n { white-space: nowrap; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 10px 0; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 110px; }
.card b { display: block; font-size: 22px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px; font-weight: 600; }
.chip { border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; margin: 16px 0; }
.chip dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 10px 0; }
.chip dt { color: var(--muted); } .chip dd { margin: 0; word-break: break-all; }
pre { background: #0d1117; color: #e6edf3; padding: 10px 12px; border-radius: 6px; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
.plots { display: flex; flex-wrap: wrap; gap: 10px; }
.plots svg { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
.fleet svg { max-width: 640px; width: 100%; height: auto; }
.action { font-weight: 600; }
footer { margin-top: 30px; font-size: 12px; }
"""


def _when(value) -> str:
    return h(format_time(value)[:19].replace("T", " ") + " UTC") if value else "never"


def _short(value) -> str:
    return h(format_time(value)[:16].replace("T", " ")) if value else "never"


def _num(value) -> str:
    return "–" if value is None else h(f"{value:.4g}")


def _badge(state: str) -> str:
    color = plots.STATE_COLORS.get(state, "#57606a")
    return f'<span class="badge" style="background:{color}">{h(state)}</span>'


def _chip(chip: ChipReport, number: int) -> str:
    ident = chip.identity
    label = f"chip{number}"
    stack = ", ".join(f"{k} {v}" for k, v in sorted(ident.stack.items())) or "–"
    parts = [
        f'<section class="chip" id="{label}">',
        f"<h3>{_badge(chip.state)}<span>{h(ident.host)} #{ident.index}</span><span class='mono'>{h(ident.chip_id)}</span>"
        + (f"<span class='muted'>dry run proposes {_badge(chip.proposed_state)}</span>" if chip.proposed_state else "")
        + ("<span class='muted'>held by the circuit breaker: drains nothing</span>" if chip.provenance and chip.provenance.held_by_breaker else "")
        + "</h3>",
        "<dl>",
        f"<dt>model</dt><dd>{h(ident.model)} ({h(ident.vendor)})</dd>",
        f"<dt>stack</dt><dd>{h(stack)} <span class='muted mono'>{h(ident.stack_hash)}</span></dd>",
    ]
    if chip.provenance:
        p = chip.provenance
        parts.append(
            f"<dt>provenance</dt><dd>{h(p.from_state)} → {h(p.to_state)} by {h(p.actor)} at {_when(p.at)}, "
            f"<b>{'dry run' if p.dry_run else 'applied'}</b>: {h(p.reason)}</dd>"
        )
    parts.append(f"<dt>action</dt><dd><span class='action'>{h(chip.action.kind.replace('_', ' '))}</span> — {h(chip.action.why)}</dd>")
    parts.append("</dl>")
    if chip.action.commands:
        parts.append("<pre>" + "\n".join(h(c) for c in chip.action.commands) + "</pre>")
    if chip.verdicts:
        parts.append(
            "<table><tr><th>verdict</th><th>severity</th><th>k of n</th><th>statistic</th><th>p</th><th>score</th>"
            "<th>first seen (UTC)</th><th>last seen (UTC)</th><th>summary</th></tr>"
        )
        for v in chip.verdicts:
            parts.append(
                f"<tr><td>{h(v.kind)}</td><td>{h(v.severity)}</td><td class=n>{v.k} of {v.n}</td><td class=n>{_num(v.statistic)}</td>"
                f"<td class=n>{_num(v.p_value)}</td><td class=n>{_num(v.score)}</td><td class=n>{_short(v.first_seen)}</td>"
                f"<td class=n>{_short(v.last_seen)}</td>"
                f"<td>{h(v.summary)}</td></tr>"
            )
        parts.append("</table>")
    if chip.evidence:
        parts.append(
            "<table><tr><th>probe</th><th>case</th><th>dtype</th><th>seed</th><th>expected digest (cohort majority)</th><th>observed digest</th>"
            "<th>first seen (UTC)</th><th>last seen (UTC)</th><th>times</th><th>reproduced</th></tr>"
        )
        for e in chip.evidence:
            parts.append(
                f"<tr><td>{h(e.probe)}</td><td>{h(e.case)}</td><td>{h(e.dtype)}</td><td>{e.seed}</td>"
                f"<td class='mono id' title='{h(e.expected_digest or '')}'>{h(e.expected_digest or '–')}</td>"
                f"<td class='mono id' title='{h(e.observed_digest or '')}'>{h(e.observed_digest or '–')}</td>"
                f"<td class=n>{_short(e.first_seen)}</td><td class=n>{_short(e.last_seen)}</td><td>{e.occurrences}</td>"
                f"<td>{'yes' if e.reproduced else 'no'}</td></tr>"
            )
        parts.append("</table>")
    figures = []
    if chip.throughput:
        figures.append(plots.throughput(chip.throughput, label))
    if any(n for _, n in chip.mismatches_over_time):
        figures.append(plots.mismatches_over_time(chip.mismatches_over_time, label))
    if chip.failures:
        figures.append(plots.failures(chip.failures, label))
    if figures:
        parts.append('<div class="plots">' + "".join(figures) + "</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _host_table(report: FleetReport) -> str:
    rows: dict[str, dict[str, int]] = {}
    for chip in report.chips:
        rows.setdefault(chip.identity.host, {}).setdefault(chip.state, 0)
        rows[chip.identity.host][chip.state] += 1
    flagged_hosts = sorted(host for host, states in rows.items() if set(states) - {"healthy", "released"})
    if not flagged_hosts:
        return ""
    out = ["<h2>Hosts with flagged chips</h2><table><tr><th>host</th>"]
    out += [f"<th>{h(s)}</th>" for s in plots.STATE_COLORS] + ["</tr>"]
    for host in flagged_hosts:
        out.append(f"<tr><td>{h(host)}</td>" + "".join(f"<td>{rows[host].get(s, 0)}</td>" for s in plots.STATE_COLORS) + "</tr>")
    out.append("</table>")
    return "".join(out)


def render_html(report: FleetReport) -> str:
    counts = report.state_counts
    flagged = report.flagged
    cards = "".join(
        f'<div class="card"><span class="muted">{h(s)}</span><b style="color:{plots.STATE_COLORS[s]}">{n}</b></div>'
        for s, n in counts.items()
    )
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>sdc quarantine report — {len(flagged)} flagged of {len(report.chips)} chips</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>sdc quarantine report</h1>",
        f"<div class='muted'>generated {_when(report.generated_at)} from {h(report.source or 'the store')} · "
        f"last complete sweep {_when(report.last_sweep_at)} · {len(report.chips)} chips on {len(report.hosts)} hosts</div>",
        f'<div class="cards">{cards}</div>',
        f'<div class="fleet">{plots.fleet_states(counts)}</div>',
    ]
    if not flagged:
        body.append("<h2>No chip is flagged</h2><p>Every chip with evidence is healthy or released.</p>")
    else:
        body.append(_host_table(report))
        body.append(f"<h2>Flagged chips ({len(flagged)})</h2>")
        body.append("<table><tr><th>host</th><th>#</th><th>chip</th><th>model</th><th>state</th><th>verdicts</th><th>action</th></tr>")
        for n, chip in enumerate(flagged):
            verdicts = ", ".join(f"{v.kind} {v.severity}" for v in chip.verdicts) or "–"
            body.append(
                f"<tr><td>{h(chip.identity.host)}</td><td>{chip.identity.index}</td>"
                f"<td class='id mono'><a href='#chip{n}'>{h(chip.identity.chip_id)}</a></td><td>{h(chip.identity.model)}</td>"
                f"<td>{_badge(chip.state)}{' → ' + _badge(chip.proposed_state) + ' <span class=muted>dry run</span>' if chip.proposed_state else ''}</td><td>{h(verdicts)}</td><td>{h(chip.action.kind.replace('_', ' '))}</td></tr>"
            )
        body.append("</table>")
        body.extend(_chip(chip, n) for n, chip in enumerate(flagged))
    body.append(precision_html(report.precision))
    body.append("<footer class='muted'>sdc — evidence is never edited; this page was generated from the store and "
                "fetches nothing.</footer></body></html>")
    return "\n".join(body)
