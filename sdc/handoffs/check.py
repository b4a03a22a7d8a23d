"""``sdc check``: this node's verdict as one short line and an exit code, for health checkers.

node-problem-detector's custom plugin monitor and Slurm's HealthCheckProgram (directly or
through NHC) run it every minute or so: it only reads stored states, never runs a probe, and
prints one line of at most 80 characters naming the worst chip first, then its verdict.

Exit codes (the Nagios convention all three understand):

- 1 (fault, the node should drain) only when a chip *drains* (``ChipStatus.drains``): it is
  quarantined or retired and still in the machine;
- 0 when every chip is healthy or released, and also when a chip is only suspect (held back
  by the circuit breaker or not yet confirmed) or retired and found gone: the line then starts
  ``WARN:`` and says so, and no health checker drains on it; a chip recorded as replaced
  (``sdc quarantine replace``) is gone and not mentioned;
- 2 (unknown) when no chip of this host is recorded or the store cannot be read.

NHC ``eval``s the message of its ``die``, so the line is built from ``sdc.safe_text``'s safe
characters only: a chip id such as ``GPU-a'$(touch /tmp/x)'b`` prints as ``GPU-a___touch__tmp_x__b``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdc.exitcodes import ExitCode
from sdc.handoffs.state import FAULT_STATES, ChipStatus
from sdc.safe_text import safe_token

MAX_LINE = 80
FORMATS = ("text", "npd", "nhc")
# Words of the line outside the data: nothing a shell would expand (no quotes, $, (, ;).
PREFIX = {
    "text": {"ok": "OK: ", "warn": "WARN: ", "fault": "FAULT: ", "unknown": "UNKNOWN: "},
    "npd": {"ok": "", "warn": "SDCChipWarning: ", "fault": "SDCChipFault: ", "unknown": "SDCUnknown: "},
    "nhc": {"ok": "OK: sdc: ", "warn": "WARN: sdc: ", "fault": "SDC: ", "unknown": "sdc: "},
}


@dataclass(frozen=True)
class CheckResult:
    """Exit code, the kind of line, and its message; ``chip_id`` is named first on a fault or warning."""

    code: ExitCode
    message: str
    chip_id: str | None = None
    level: str = ""  # ok, warn, fault, unknown (default: from the code)

    @property
    def word(self) -> str:
        return self.level or {ExitCode.HEALTHY: "ok", ExitCode.FAULT: "fault"}.get(self.code, "unknown")


def _fit(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    keep = limit - 3
    return text[: keep // 2] + "..." + text[len(text) - (keep - keep // 2) :]


def _describe(chip: ChipStatus, others: int) -> str:
    """What follows the chip id: verdict, state, index, and how many more."""
    parts = []
    if chip.verdict_kind or chip.severity:
        parts.append("/".join(safe_token(x) for x in (chip.verdict_kind, chip.severity) if x))
    parts.append(chip.state if not chip.held else f"{chip.state} held-by-breaker")
    if not chip.present:
        parts.append("gone")
    parts.append(f"#{int(chip.index)}")
    if others:
        parts.append(f"+{others} more")
    return " " + " ".join(parts)


def decide(host: str, chips: list[ChipStatus]) -> CheckResult:
    """The check's outcome for one host from its chips' states (pure)."""
    if not chips:
        return CheckResult(ExitCode.UNKNOWN, f"no chips recorded for {safe_token(host)}, run sdc sweep")
    draining = sorted((c for c in chips if c.drains), key=lambda c: c.rank, reverse=True)
    if draining:
        return CheckResult(ExitCode.FAULT, _describe(draining[0], len(draining) - 1), draining[0].chip_id, "fault")
    # Suspect, or retired but found gone by a sweep: report, never drain. A chip recorded as
    # replaced (an RMA, acknowledged by an operator) is not in the machine: nothing to warn of.
    flagged = sorted((c for c in chips if c.state in FAULT_STATES and not c.replaced), key=lambda c: c.rank, reverse=True)
    if flagged:
        return CheckResult(ExitCode.HEALTHY, _describe(flagged[0], len(flagged) - 1), flagged[0].chip_id, "warn")
    in_service = [c for c in chips if not c.replaced]
    return CheckResult(ExitCode.HEALTHY, f"{len(in_service)} chips healthy on {safe_token(host)}")


def format_line(result: CheckResult, fmt: str = "text", limit: int = MAX_LINE) -> str:
    """One line of at most ``limit`` characters from safe characters only.

    The chip id comes first, then its verdict and state; to fit, drop "+N more", then the
    index, and shorten the id in the middle only if it still does not fit.
    """
    prefix = PREFIX[fmt][result.word]
    message = result.message
    if result.chip_id is not None:
        chip_id = safe_token(result.chip_id)
        tail = result.message
        variants = (tail, tail.rsplit(" +", 1)[0], tail.rsplit(" +", 1)[0].rsplit(" #", 1)[0])
        for variant in variants:
            room = limit - len(prefix) - len(variant)
            if room >= len(chip_id):
                break
        message = f"{_fit(chip_id, max(room, 12))}{variant}"
    line = " ".join((prefix + _safe_words(message)).split())  # no newline can leak from the data
    return _fit(line, limit)


def _safe_words(text: str) -> str:
    """Keep our own punctuation (``/`` ``#`` ``,``) but nothing a shell would expand or split on."""
    return "".join(ch if (ch.isalnum() and ch.isascii()) or ch in " ._:@+=-/#," else "_" for ch in text)
