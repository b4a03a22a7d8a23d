"""What an operator should do about a chip, with the exact commands: a pure function of its state.

The ladder follows the evidence: a *suspect* chip is reset and swept again to confirm; a
*quarantined* one is drained and goes through the vendor's field diagnostics, and at high
severity to the vendor; a *critical* or *retired* one is replaced.

Host names and chip ids come from the data, so a command names them only when they are in
``sdc.safe_text``'s safe set (else the action says the commands are withheld), every word is
shell-quoted, and ``ssh --`` ends ssh's options before the host (a host named
``-oProxyCommand=...`` is never an option). NVIDIA commands name the GPU by its UUID, which
NVML and DCGM agree on, never by the CUDA ordinal.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal, Sequence

from sdc.records import SEVERITY_RANK
from sdc.safe_text import is_safe_name

ActionKind = Literal["none", "reset", "field_diagnostics", "contact_vendor", "replace", "withheld"]
ACTION_KINDS: tuple[str, ...] = ("none", "reset", "field_diagnostics", "contact_vendor", "replace", "withheld")


@dataclass(frozen=True)
class Action:
    """A recommended action: its kind, one sentence saying why, and the commands to run."""

    kind: ActionKind
    why: str
    commands: tuple[str, ...] = ()


def _q(value: object) -> str:
    return shlex.quote(str(value))


def _on_host(host: str, command: str) -> str:
    """Run ``command`` on ``host``: ssh joins its words for the remote shell, so it goes as one quoted word."""
    return f"ssh -- {_q(host)} {_q(command)}"


def _gpu(chip_id: str, index: int) -> str:
    """How nvidia-smi names the GPU: its UUID (``GPU-...``) when the chip id is one, else the index."""
    return chip_id if chip_id.startswith(("GPU-", "MIG-")) else str(int(index))


def _backend(vendor: str) -> str:
    return {"nvidia": "cuda", "amd": "cuda", "cpu": "cpu"}.get(vendor, vendor or "cuda")


def _reset(vendor: str, index: int, chip_id: str = "") -> str | None:
    if vendor == "nvidia":
        return f"sudo nvidia-smi --gpu-reset -i {_gpu(chip_id, index)}"
    if vendor == "amd":
        return f"sudo rocm-smi --gpureset -d {int(index)}"
    return None


def _diagnostics(vendor: str, index: int, chip_id: str = "") -> str | None:
    if vendor == "nvidia":
        gpu = _gpu(chip_id, index)
        if not gpu.startswith(("GPU-", "MIG-")):
            return f"sudo dcgmi diag -r 3 -i {gpu}"
        # DCGM numbers GPUs its own way: look its id up by UUID in 'dcgmi discovery -l'.
        find = f"dcgmi discovery -l | awk -v u={gpu} '$2 ~ /^[0-9]+$/ {{id=$2}} index($0, u) {{print id; exit}}'"
        return f'sudo dcgmi diag -r 3 -i "$({find})"'

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
    if not (is_safe_name(host) and is_safe_name(chip_id)):
        if state in ("healthy", "released") and worst < 0:
            return Action("none", f"{state}: nothing to do")
        return Action("withheld", "the chip id or host name has characters outside the safe set: check it by hand; "
                      "no command is shown for it")
    resweep = _on_host(host, f"sdc sweep --suite standard --devices {_backend(vendor)}:{int(index)}")
    drain = f"sdc export slurm --apply --host {_q(host)}   # or: sdc export k8s --apply --host {_q(host)}"
    evidence = f"sdc export --chip {_q(chip_id)} -o {_q(f'sdc-evidence-{chip_id}.jsonl')}"

    if state == "retired":
        return Action("replace", "retired: the chip is out of service for good", (drain, evidence))
    if state in ("healthy", "released") and worst < 0:
        return Action("none", f"{state}: nothing to do")
    if state in ("healthy", "released", "suspect"):
        commands = [c for c in (_reset(vendor, index, chip_id),) if c]
        commands = [_on_host(host, c) for c in commands] + [resweep]
        return Action("reset", "suspect: reset the chip and sweep it again to confirm or clear the verdict", tuple(commands))
    if worst >= SEVERITY_RANK["critical"]:
        return Action("replace", "critical verdict: take the chip out of service and replace it", (drain, evidence))
    if worst >= SEVERITY_RANK["high"]:
        report = _bug_report(vendor)
        commands = [drain, evidence] + ([_on_host(host, report)] if report else [])
        return Action("contact_vendor", "quarantined with a high-severity verdict: open a case with the vendor", tuple(commands))
    diag = _diagnostics(vendor, index, chip_id)
    commands = [drain] + ([_on_host(host, diag)] if diag else []) + [resweep]
    return Action("field_diagnostics", "quarantined: drain, run the vendor's field diagnostics, sweep again", tuple(commands))
