"""``sdc export k8s``: cordon and taint nodes with chips that drain, and undo it when none is left.

A chip drains when it is quarantined or retired and still in the machine
(``ChipStatus.drains``); a suspect chip never cordons anything.

sdc marks what it did: the taint ``sdc.io/quarantined=<chip>:NoSchedule`` and, when it
cordoned a node that was schedulable, the annotation ``sdc.io/cordoned=true``. On release it
removes its taint and uncordons only a node it cordoned itself, so a node cordoned by an
operator or another controller stays cordoned. Nodes are read with ``kubectl get nodes -o
json`` behind the ``KubeClient`` protocol; the plan is a pure function.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from sdc.handoffs.commands import HandoffError, Skip, Step, run_tool
from sdc.handoffs.state import ChipStatus
from sdc.safe_text import is_safe_name, safe_token

TAINT_KEY = "sdc.io/quarantined"
ALIAS_ADDRESS_TYPES = ("Hostname", "InternalDNS", "ExternalDNS")
CORDON_ANNOTATION = "sdc.io/cordoned"
EFFECT = "NoSchedule"


@dataclass(frozen=True)
class KubeNode:
    name: str
    unschedulable: bool = False
    taints: tuple[tuple[str, str, str], ...] = ()  # (key, value, effect)
    annotations: tuple[tuple[str, str], ...] = ()
    # Other names the node goes by: its kubernetes.io/hostname label and its Hostname and DNS
    # addresses (on EKS, say, the node is ip-10-0-0-7.ec2.internal while the host says ip-10-0-0-7).
    aliases: tuple[str, ...] = ()

    def taint(self, key: str) -> tuple[str, str, str] | None:
        return next((t for t in self.taints if t[0] == key), None)

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)


class KubeClient(Protocol):
    def nodes(self) -> dict[str, KubeNode]: ...

    def run(self, argv: Sequence[str]) -> None: ...


def parse_nodes(text: str) -> dict[str, KubeNode]:
    """Parse ``kubectl get nodes -o json``."""
    try:
        items = json.loads(text)["items"]
    except (ValueError, KeyError, TypeError) as exc:
        raise HandoffError(f"kubectl get nodes -o json: unexpected output ({exc})") from None
    out = {}
    for item in items:
        meta, spec = item.get("metadata", {}), item.get("spec", {})
        taints = tuple((t.get("key", ""), t.get("value", "") or "", t.get("effect", "")) for t in spec.get("taints") or ())
        addresses = (item.get("status") or {}).get("addresses") or ()
        aliases = {a.get("address", "") for a in addresses if a.get("type") in ALIAS_ADDRESS_TYPES}
        aliases.add((meta.get("labels") or {}).get("kubernetes.io/hostname", ""))
        aliases -= {"", meta["name"]}
        out[meta["name"]] = KubeNode(
            meta["name"], bool(spec.get("unschedulable")), taints, tuple(sorted((meta.get("annotations") or {}).items())),
            tuple(sorted(aliases)),
        )
    return out


def node_for(host: str, nodes: Mapping[str, KubeNode]) -> tuple[KubeNode | None, str]:
    """The node sdc's host name refers to, or None and why not.

    By node name; else by a name the node reports for itself; else by short name (the first
    DNS label) when exactly one node has it. Never a guess between two candidates.
    """
    if host in nodes:
        return nodes[host], ""
    named = [n for n in nodes.values() if host in n.aliases]
    if not named:
        short = host.split(".")[0]
        named = [n for n in nodes.values() if short in {name.split(".")[0] for name in (n.name, *n.aliases)}]
    if len(named) == 1:
        return named[0], ""
    if named:
        return None, f"ambiguous: nodes {', '.join(sorted(n.name for n in named))} all go by this name"
    return None, "not a Kubernetes node of the current context (by name, hostname label or address)"


class CommandKube:
    """The real client: kubectl with the current context."""

    def nodes(self) -> dict[str, KubeNode]:
        return parse_nodes(run_tool(["kubectl", "get", "nodes", "-o", "json"]))

    def run(self, argv: Sequence[str]) -> None:
        run_tool(argv)


def taint_value(chip_id: str) -> str:
    """A chip id as a valid label value: at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends."""
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", chip_id)[:63]
    return value.strip("-_.") or "chip"


def plan(statuses: Mapping[str, Sequence[ChipStatus]], nodes: Mapping[str, KubeNode]) -> tuple[list[Step], list[Skip]]:
    steps: list[Step] = []
    skips: list[Skip] = []
    for host in sorted(statuses):
        if not is_safe_name(host):
            skips.append(Skip(safe_token(host), "left alone: the host name has characters outside the safe set"))
            continue
        node, why = node_for(host, nodes)
        if node is None:
            skips.append(Skip(host, why))
            continue
        name = node.name
        bad = sorted((c for c in statuses[host] if c.drains), key=lambda c: c.rank, reverse=True)
        ours = node.taint(TAINT_KEY)
        if bad:
            value = taint_value(bad[0].chip_id)
            if ours and ours[1] == value and node.unschedulable:
                skips.append(Skip(host, "already cordoned and tainted by sdc"))
                continue
            if not node.unschedulable:
                steps.append(Step(host, ("kubectl", "cordon", name), "quarantined chip(s)"))
                steps.append(
                    Step(host, ("kubectl", "annotate", "node", name, f"{CORDON_ANNOTATION}=true", "--overwrite"), "remember sdc cordoned it")
                )
            taint = f"{TAINT_KEY}={value}:{EFFECT}"
            steps.append(Step(host, ("kubectl", "taint", "nodes", name, taint, "--overwrite"), f"chip {safe_token(bad[0].chip_id)} {bad[0].state}"))
        elif ours:
            steps.append(Step(host, ("kubectl", "taint", "nodes", name, f"{TAINT_KEY}:{EFFECT}-"), "chips released"))
            if node.annotation(CORDON_ANNOTATION) == "true":
                steps.append(Step(host, ("kubectl", "uncordon", name), "sdc cordoned it"))
                steps.append(Step(host, ("kubectl", "annotate", "node", name, f"{CORDON_ANNOTATION}-"), "forget the mark"))
            elif node.unschedulable:
                skips.append(Skip(host, "left cordoned: it was cordoned by someone else"))
    return steps, skips
