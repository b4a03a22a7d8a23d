"""Reports of the quarantine list: a pure model read from the store, and one renderer per format.

``build_report`` reads; ``render(report, fmt)`` turns the model into text for a format.
"""

from __future__ import annotations

from sdc.reports.model import ChipReport, FleetReport
from sdc.reports.read import build_report

FORMATS = ("table", "json", "markdown", "html")


def render(report: FleetReport, fmt: str, width: int = 140, color: bool = False) -> str:
    """The report as text in ``fmt`` (one of FORMATS); renderers are imported on use."""
    if fmt == "table":
        from sdc.reports.table import render_table

        return render_table(report, width=width, color=color)
    if fmt == "json":
        from sdc.reports.json_report import render_json

        return render_json(report)
    if fmt == "markdown":
        from sdc.reports.markdown import render_markdown

        return render_markdown(report)
    if fmt == "html":
        from sdc.reports.html_report import render_html

        return render_html(report)
    raise ValueError(f"report format {fmt!r}: expected one of {', '.join(FORMATS)}")


__all__ = ["ChipReport", "FleetReport", "FORMATS", "build_report", "render"]
