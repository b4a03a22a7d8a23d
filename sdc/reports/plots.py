"""Plots for the HTML report, each returned as an inline SVG string (matplotlib, no files).

Text is kept as SVG text (``svg.fonttype: none``) so the page stays small and searchable;
matplotlib escapes it, and ``text.parse_math`` is off so a ``$`` in a probe name is literal.
"""

from __future__ import annotations

import html
import io
import re
from datetime import datetime, timedelta
from typing import Sequence

from sdc.reports.model import Throughput

STATE_COLORS = {
    "healthy": "#2e7d32",
    "suspect": "#f9a825",
    "quarantined": "#c62828",
    "released": "#0277bd",
    "retired": "#6a1b9a",
}
_RC = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.hashsalt": "sdc",
}


def _figure(width: float, height: float, left: float = 0.7):
    from matplotlib.figure import Figure

    # Fixed margins (inches) rather than constrained layout, which draws every figure twice.
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left / width, right=1 - 0.2 / width, bottom=0.55 / height, top=1 - 0.35 / height)
    return fig, fig.add_subplot()


def _svg(fig, label: str) -> str:
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context(_RC):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    # Element ids must be unique in one HTML page; prefix each figure's ids with its label.
    prefix = re.sub(r"[^a-zA-Z0-9]", "", label)[:24] or "fig"
    text = re.sub(r'id="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    text = re.sub(r'xlink:href="#([^"]+)"', rf'xlink:href="#{prefix}-\1"', text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{html.escape(label)}" ', 1)


def fleet_states(counts: dict[str, int]) -> str:
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig, ax = _figure(6.0, 1.9, left=0.95)
        states = list(counts)
        values = [counts[s] for s in states]
        bars = ax.barh(states[::-1], values[::-1], color=[STATE_COLORS.get(s, "#777") for s in states[::-1]])
        ax.bar_label(bars, labels=[str(v) for v in values[::-1]], padding=3)
        ax.set_xlabel("chips")
        ax.set_xlim(0, max(values + [1]) * 1.15)
        ax.set_title("fleet by quarantine state", loc="left")
        return _svg(fig, "fleet by state")


def throughput(tp: Throughput, label: str) -> str:
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig, ax = _figure(3.7, 2.6)
        fig.subplots_adjust(top=1 - 0.55 / 2.6)
        if tp.cohort:
            ax.hist(tp.cohort, bins=min(40, max(5, len(tp.cohort) // 5)), color="#90a4ae")
        for value in tp.chip:
            ax.axvline(value, color="#c62828", linewidth=1.4, alpha=0.85)
        ax.set_xlabel(f"{tp.unit or 'throughput'}; cohort: {len(tp.cohort)} runs")
        ax.set_ylabel("runs")
        ax.set_title(
            f"throughput: chip (red), cohort (grey)\n{tp.probe} {tp.case}",
            loc="left", fontsize=8.5,
        )
        return _svg(fig, f"{label} throughput")


def mismatches_over_time(points: Sequence[tuple[datetime, int]], label: str) -> str:
    import matplotlib
    import matplotlib.dates as mdates

    with matplotlib.rc_context(_RC):
        fig, ax = _figure(3.7, 2.5)
        fig.subplots_adjust(bottom=0.75 / 2.5)
        times = [t for t, _ in points]
        counts = [n for _, n in points]
        ax.plot(times, counts, marker="o", color="#c62828", linewidth=1)
        ax.set_ylim(bottom=0, top=max(counts + [1]) * 1.2)
        ax.set_ylabel("mismatches per sweep")
        from matplotlib.ticker import MaxNLocator

        if len(times) <= 8:
            ax.set_xticks(times)  # one tick per sweep reads best when there are few
        else:
            ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%b %d\n%H:%M"))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if len(times) == 1:
            ax.set_xlim(times[0] - timedelta(hours=12), times[0] + timedelta(hours=12))
        ax.set_title("mismatches over time", loc="left")
        return _svg(fig, f"{label} mismatches")


def failures(rows: Sequence[tuple[str, str, int]], label: str) -> str:
    import matplotlib

    with matplotlib.rc_context(_RC):
        names_width = max((len(f"{p} {d}") for p, d, _ in rows), default=4)
        fig, ax = _figure(3.7, 1.1 + 0.28 * max(len(rows), 1), left=min(0.25 + 0.07 * names_width, 2.0))
        names = [f"{p} {d}".strip() for p, d, _ in rows][::-1]
        values = [n for _, _, n in rows][::-1]
        bars = ax.barh(names, values, color="#ef6c00")
        ax.bar_label(bars, padding=3)
        ax.set_xlim(0, max(values + [1]) * 1.2)
        ax.set_xlabel("mismatches")
        ax.set_title("failed probes and dtypes", loc="left")
        return _svg(fig, f"{label} failures")
