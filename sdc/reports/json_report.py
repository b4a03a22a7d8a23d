"""The report as stable JSON: the machine-readable form, documented by docs/schema/report.json.

Field names and meanings only ever grow; ``report_version`` changes if one must change.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sdc.records import format_time
from sdc.reports.model import ChipReport, FleetReport
from sdc.reports.precision import precision_to_dict

REPORT_VERSION = 1


def _time(value: datetime | None) -> str | None:
    return format_time(value) if value is not None else None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def chip_to_dict(chip: ChipReport) -> dict[str, Any]:
    ident = chip.identity
    return {
        "chip_id": ident.chip_id,
        "host": ident.host,
        "index": ident.index,
        "vendor": ident.vendor,
        "model": ident.model,
        "stack": _plain(ident.stack),
        "stack_hash": ident.stack_hash,
        "state": chip.state,
        "proposed_state": chip.proposed_state,
        "flagged": chip.flagged,
        "verdicts": [_plain(asdict(v)) for v in chip.verdicts],
        "evidence": [_plain(asdict(e)) for e in chip.evidence],
        "action": {"kind": chip.action.kind, "why": chip.action.why, "commands": list(chip.action.commands)},
        "provenance": _plain(asdict(chip.provenance)) if chip.provenance else None,
        "throughput": _plain(asdict(chip.throughput)) if chip.throughput else None,
        "mismatches_over_time": [{"at": _time(at), "mismatches": n} for at, n in chip.mismatches_over_time],
        "failures": [{"probe": p, "dtype": d, "mismatches": n} for p, d, n in chip.failures],
    }


def report_to_dict(report: FleetReport) -> dict[str, Any]:
    return {
        "report_version": REPORT_VERSION,
        "generated_at": _time(report.generated_at),
        "source": report.source,
        "last_sweep_at": _time(report.last_sweep_at),
        "summary": {
            "chips": len(report.chips),
            "hosts": len(report.hosts),
            "flagged": len(report.flagged),
            "states": report.state_counts,
        },
        "chips": [chip_to_dict(c) for c in report.chips],
        "precision": precision_to_dict(report.precision),
    }


def render_json(report: FleetReport) -> str:
    return json.dumps(report_to_dict(report), indent=2, sort_keys=True, allow_nan=False) + "\n"
