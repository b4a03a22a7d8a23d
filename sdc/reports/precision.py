"""The precision section of the report: stack-level findings, with the two error distributions.

Read from the store with ``sdc.analysis.precision`` (the same findings as ``sdc precision``);
rendered into the JSON report (``precision``) and the HTML page (a table, and a plot per
flagged case: the platforms' relative errors side by side). Findings about stacks never make
a chip flagged.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from sdc.reports.escape import html_text as h

MAX_PLOTS = 12  # the page stays small; the JSON report has every finding


def read_precision(engine) -> tuple[dict[str, Any], ...]:
    """Every stack-level finding in the store, as JSON-safe dicts (for the report model)."""
    from sdc.analysis.precision import load_precision_results, stack_findings

    results, labels = load_precision_results(engine)
    return tuple(_plain(f.to_dict()) for f in stack_findings(results, labels=labels))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def precision_to_dict(findings: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(f) for f in findings]


def distributions_plot(finding: dict[str, Any], label: str) -> str:
    """The platforms' relative errors side by side (one strip per platform), as inline SVG."""
    from sdc.reports.plots import _figure, _svg

    names = list(finding.get("distributions", {}))
    fig, ax = _figure(6.0, 1.0 + 0.45 * max(1, len(names)), left=2.6)
    for i, name in enumerate(names):
        errors = [e for e in finding["distributions"][name].get("mean_rel_err", []) if e is not None and e > 0]
        if errors:
            ax.scatter(errors, [i] * len(errors), s=14, alpha=0.7)
    ax.set_yticks(range(len(names)), [n[:40] for n in names])
    ax.set_xscale("log")
    ax.set_xlabel("mean relative error against fp64 (per result)")
    ax.set_ylim(-0.6, len(names) - 0.4)
    return _svg(fig, label)


def precision_html(findings: Sequence[dict[str, Any]]) -> str:
    """The HTML section ('' when there is nothing to say)."""
    if not findings:
        return ""
    out = [f"<h2>Precision across platforms and stacks ({len(findings)})</h2>",
           "<p class='muted'>Findings about software stacks and platforms: none of them quarantines a chip.</p>",
           "<table><tr><th>kind</th><th>finding</th><th>tolerance row</th></tr>"]
    for f in findings:
        out.append(f"<tr><td>{h(f['kind'].replace('_', ' '))}</td><td>{h(f['summary'])}</td>"
                   f"<td class='mono'>{h(f.get('tolerance_row') or '–')}</td></tr>")
    out.append("</table>")
    plotted = [f for f in findings if f["kind"] == "less_precise"][:MAX_PLOTS]
    try:
        for n, f in enumerate(plotted):
            out.append(f"<h3>{h(f['summary'][:160])}</h3>")
            out.append(f"<div class='plot'>{distributions_plot(f, f'precision{n}')}</div>")
    except ImportError:
        out.append("<p class='muted'>install matplotlib (sdc[report]) for the error distribution plots</p>")
    return "\n".join(out)
