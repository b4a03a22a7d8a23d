"""``sdc check``: this node's verdict as one short line and an exit code, for health checkers.

node-problem-detector's custom plugin monitor and Slurm's HealthCheckProgram (directly or
through NHC) run it every minute or so: it only reads stored states, never runs a probe, and
prints one line of at most 80 characters naming the worst chip. Exit 0 healthy, 1 fault
(a chip suspect, quarantined or retired), 2 unknown (no chip of this host is recorded, or the
store cannot be read) — the Nagios convention all three understand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sdc.exitcodes import ExitCode
from sdc.handoffs.state import FAULT_STATES, ChipStatus

MAX_LINE = 80
FORMATS = ("text", "npd", "nhc")


@dataclass(frozen=True)
class CheckResult:
    """Exit code and message; on a fault, ``chip_id`` is named before ``message``."""

    code: ExitCode
    message: str
    chip_id: str | None = None


def _fit(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    keep = limit - 3
    return text[: keep // 2] + "..." + text[len(text) - (keep - keep // 2) :]


def decide(host: str, chips: list[ChipStatus]) -> CheckResult:
    """The check's outcome for one host from its chips' states (pure)."""
    if not chips:
        return CheckResult(ExitCode.UNKNOWN, f"no chips recorded for {host}; run 'sdc sweep'")
    faulty = sorted((c for c in chips if c.state in FAULT_STATES), key=lambda c: c.rank, reverse=True)
    if not faulty:
        return CheckResult(ExitCode.HEALTHY, f"{len(chips)} chips healthy on {host}")
    worst = faulty[0]
    why = ", ".join(x for x in (worst.verdict_kind, worst.severity) if x)
    tail = f" #{worst.index} {worst.state}" + (f" ({why})" if why else "")
    if len(faulty) > 1:
        tail += f" +{len(faulty) - 1} more"
    return CheckResult(ExitCode.FAULT, tail, worst.chip_id)


def format_line(result: CheckResult, fmt: str = "text", limit: int = MAX_LINE) -> str:
    """One line of at most ``limit`` characters; a long chip id is shortened in the middle."""
    prefix = {
        "text": {ExitCode.HEALTHY: "OK: ", ExitCode.FAULT: "FAULT: ", ExitCode.UNKNOWN: "UNKNOWN: "},
        "npd": {ExitCode.HEALTHY: "", ExitCode.FAULT: "SDCChipFault: ", ExitCode.UNKNOWN: "SDCUnknown: "},
        "nhc": {ExitCode.HEALTHY: "OK: sdc: ", ExitCode.FAULT: "SDC: ", ExitCode.UNKNOWN: "sdc: "},
    }[fmt][result.code]
    message = result.message
    if result.chip_id is not None:
        # The chip id is what an operator needs most, then its state, then the detail: drop
        # "+N more", then "(kind, severity)", and shorten the id only if it still does not fit.
        chip_id = " ".join(result.chip_id.split())
        for variant in (message, re.sub(r" \+\d+ more$", "", message), re.sub(r" \(.*?\)| \+\d+ more$", "", message)):
            room = limit - len(prefix) - len("chip ") - len(variant)
            if room >= len(chip_id):
                break
        message = f"chip {_fit(chip_id, max(room, 12))}{variant}"
    line = " ".join((prefix + message).split())  # no newline can leak from the data
    return _fit(line, limit)
