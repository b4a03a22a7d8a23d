"""What an operator should do about a chip, with the exact commands: a pure function of its state.

The ladder follows the evidence: a *suspect* chip is reset and swept again to confirm; a
*quarantined* one is drained and goes through the vendor's field diagnostics, and at high
severity to the vendor; a *critical* or *retired* one is replaced. Commands are shell-quoted:
host names and chip ids come from the data and must never be able to inject shell syntax.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal, Sequence

from sdc.records import SEVERITY_RANK

ActionKind = Literal["none", "reset", "field_diagnostics", "contact_vendor", "replace"]
ACTION_KINDS: tuple[str, ...] = ("none", "reset", "field_diagnostics", "contact_vendor", "replace")



@dataclass(frozen=True)
class Action:
    """A recommended action: its kind, one sentence saying why, and the commands to run."""

    kind: ActionKind
    why: str
    commands: tuple[str, ...] = ()


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _on_host(host: str, command: str) -> str:
    return f"ssh {_q(host)} -- {command}"


def _backend(vendor: str) -> str:
    return {"nvidia": "cuda", "amd": "cuda", "cpu": "cpu"}.get(vendor, vendor or "cuda")


def _reset(vendor: str, index: int) -> str | None:
    if vendor == "nvidia":
        return f"sudo nvidia-smi --gpu-reset -i {int(index)}"
    if vendor == "amd":
        return f"sudo rocm-smi --gpureset -d {int(index)}"
    return None


def _diagnostics(vendor: str, index: int) -> str | None:
    if vendor == "nvidia":
        return f"sudo dcgmi diag -r 3 -i {int(index)}"
    if vendor == "amd":
        return f"sudo rvs -d 3 -i {int(index)}"
    return None


def _bug_report(vendor: str) -> str | None:
    if vendor == "nvidia":
        return "sudo nvidia-bug-report.sh"
    if vendor == "amd":
        return "sudo amd-smi static --json > amd-static.json"
    return None


def recommend(
    chip_id: str, host: str, index: int, vendor: str, state: str, severities: Sequence[str]
) -> Action:
    """The action for one chip, from its quarantine state and the severities of its verdicts."""
    worst = max((SEVERITY_RANK.get(s, 0) for s in severities), default=-1)
    resweep = _on_host(host, f"sdc sweep --suite standard --devices {_q(f'{_backend(vendor)}:{int(index)}')}")
    drain = "sdc export slurm --apply   # or: sdc export k8s --apply"
    evidence = f"sdc export --kind verdict --kind probe_result -o {_q(f'sdc-evidence-{chip_id}.jsonl')}"

    if state == "retired":
        return Action("replace", "retired: the chip is out of service for good", (drain, evidence))
    if state in ("healthy", "released") and worst < 0:
        return Action("none", f"{state}: nothing to do")
    if state in ("healthy", "released", "suspect"):
        commands = [c for c in (_reset(vendor, index),) if c]
        commands = [_on_host(host, c) for c in commands] + [resweep]
        return Action("reset", "suspect: reset the chip and sweep it again to confirm or clear the verdict", tuple(commands))
    if worst >= SEVERITY_RANK["critical"]:
        return Action("replace", "critical verdict: take the chip out of service and replace it", (drain, evidence))
    if worst >= SEVERITY_RANK["high"]:
        report = _bug_report(vendor)
        commands = [drain, evidence] + ([_on_host(host, report)] if report else [])
        return Action("contact_vendor", "quarantined with a high-severity verdict: open a case with the vendor", tuple(commands))
    diag = _diagnostics(vendor, index)
    commands = [drain] + ([_on_host(host, diag)] if diag else []) + [resweep]
    return Action("field_diagnostics", "quarantined: drain, run the vendor's field diagnostics, sweep again", tuple(commands))
