"""``sdc export slurm``: drain nodes with chips that drain, resume them when none is left.

A node drains when one of its chips drains (``ChipStatus.drains``: quarantined or retired and
still in the machine); a suspect chip, breaker-held or not, never drains anything.

Ownership is the reason string: sdc drains with a reason starting ``SDC:`` and only ever
changes or resumes nodes whose current reason starts with ``SDC:``. A node drained or downed
by anyone else (an admin, NHC, whose reasons start ``NHC:``, Slurm itself) is left exactly as
it is, and the plan says so. The reason puts the chip and its verdict first, since ``sinfo -R``
shows 20 characters by default, and is built from safe characters only; a host name outside
the safe set is never passed to scontrol. Current reasons are read with ``sinfo`` behind the
``SlurmClient`` protocol; the plan is a pure function of chip states and those reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from sdc.handoffs.commands import Skip, Step, run_tool
from sdc.handoffs.state import ChipStatus
from sdc.safe_text import is_safe_name, quoted, safe_token

REASON_PREFIX = "SDC:"
# Slurm keeps reasons short in sinfo's columns; long ones are still stored, but stay readable.
MAX_REASON = 120
SINFO_FORMAT = "%N|%T|%E"


@dataclass(frozen=True)
class NodeStatus:
    name: str
    state: str
    reason: str = ""


class SlurmClient(Protocol):
    def node_status(self, nodes: Sequence[str]) -> dict[str, NodeStatus]: ...

    def run(self, argv: Sequence[str]) -> None: ...


def parse_sinfo(text: str) -> dict[str, NodeStatus]:
    """Parse ``sinfo --noheader --Node --format='%N|%T|%E'`` (node|state|reason) lines."""
    out: dict[str, NodeStatus] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, _, rest = line.partition("|")
        state, _, reason = rest.partition("|")
        reason = reason.strip()
        out[name.strip()] = NodeStatus(name.strip(), state.strip(), "" if reason.lower() == "none" else reason)
    return out


class CommandSlurm:
    """The real client: ``sinfo`` to read, ``scontrol`` to act."""

    def node_status(self, nodes: Sequence[str]) -> dict[str, NodeStatus]:
        # A host outside the safe set is left alone by the plan, so it is not even asked about:
        # a comma or newline in it would name other nodes, a control character reach sinfo's errors.
        nodes = [n for n in nodes if is_safe_name(n)]
        if not nodes:
            return {}
        return parse_sinfo(
            run_tool(["sinfo", "--noheader", "--Node", f"--nodes={','.join(nodes)}", f"--format={SINFO_FORMAT}"])
        )

    def run(self, argv: Sequence[str]) -> None:
        run_tool(argv)


def drain_reason(chips: Sequence[ChipStatus]) -> str:
    """``SDC: <chip> <kind>/<severity> <state> #<index> [+N more]`` for the worst draining chip."""
    bad = sorted((c for c in chips if c.drains), key=lambda c: c.rank, reverse=True)
    first = bad[0]
    why = "/".join(safe_token(x) for x in (first.verdict_kind, first.severity) if x)
    words = [REASON_PREFIX, safe_token(first.chip_id)] + ([why] if why else []) + [first.state, f"#{int(first.index)}"]
    if len(bad) > 1:
        words.append(f"+{len(bad) - 1} more")
    text = " ".join(words)
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def plan(statuses: Mapping[str, Sequence[ChipStatus]], current: Mapping[str, NodeStatus]) -> tuple[list[Step], list[Skip]]:
    """What to run so Slurm matches the quarantine list, touching only ``SDC:`` reasons."""
    steps: list[Step] = []
    skips: list[Skip] = []
    for host in sorted(statuses):
        chips = statuses[host]
        if not is_safe_name(host):
            skips.append(Skip(safe_token(host), "left alone: the host name has characters outside the safe set"))
            continue
        node = current.get(host)
        if node is None:
            skips.append(Skip(host, "not a Slurm node (sinfo does not know it)"))
            continue
        ours = node.reason.startswith(REASON_PREFIX)
        if any(c.drains for c in chips):
            reason = drain_reason(chips)
            if node.reason and not ours:
                skips.append(Skip(host, f"left alone: reason {quoted(node.reason[:60])} is not sdc's (it does not start with {REASON_PREFIX})"))
            elif ours and node.reason == reason and "drain" in node.state.lower():
                skips.append(Skip(host, "already drained by sdc"))
            else:
                argv = ("scontrol", "update", f"NodeName={host}", "State=DRAIN", f"Reason={reason}")
                steps.append(Step(host, argv, "chip(s) that drain: quarantined or retired and present"))
        elif ours:
            argv = ("scontrol", "update", f"NodeName={host}", "State=RESUME")
            steps.append(Step(host, argv, "no chip drains any more (released, healthy, suspect or gone); sdc drained it"))
    return steps, skips
