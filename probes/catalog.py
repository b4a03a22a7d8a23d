"""Probe catalogs: harvested op calls deduplicated, compressed to a budget, written as versioned JSON.

A catalog (``docs/schema/catalog.json``) names the model configuration it came from and lists
cases — one op at one set of shapes, strides, dtypes and scalar arguments — with how often the
step ran it. Compression keeps at least one case of every *kernel class* (op x dtypes x tile
class: tile-aligned, odd edge tiles, split-K, GEMV, transposed operands, ...), then the most
frequent cases up to the budget, and lists every dropped case with the kept case that stands
for its kernel class.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from math import prod
from pathlib import Path
from typing import Any, Sequence

import torch

from probes.harvest import Recording
from sdc.records import canonical_json

CATALOG_VERSION = 1
ID_PATTERN = re.compile(r"c[0-9a-f]{12}")
INPUT_DTYPES = ("fp64", "fp32", "bf16", "fp16", "int64", "int32", "bool")
TILE = 128  # the tile edge GEMM libraries use most; a dimension not a multiple has an edge tile
VECTOR = 16  # elements per vector load that matter for elementwise tails


class CatalogError(ValueError):
    """A catalog file that cannot be used; the message names the file and what is wrong."""


def case_key(call) -> str:
    return canonical_json({"op": call.op, "inputs": call.inputs, "args": call.args, "kwargs": call.kwargs})


def _transposed(spec: dict[str, Any]) -> bool:
    shape, stride = spec["shape"], spec["stride"]
    return len(shape) >= 2 and shape[-1] > 1 and stride[-1] != 1


def gemm_dims(op: str, inputs: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(m, n, k) of a GEMM case from its operand shapes."""
    a, b = (inputs[-2], inputs[-1]) if op.split(".")[1] in ("addmm", "baddbmm", "addbmm") else (inputs[0], inputs[1])
    return a["shape"][-2], b["shape"][-1], a["shape"][-1]


def tile_class(case: dict[str, Any]) -> str:
    """The kernel variant a case reaches, as far as shapes decide it."""
    inputs, kind = case["inputs"], case["kernel_class"]
    layout = "".join("T" if _transposed(s) else "N" for s in inputs[:3])
    if kind == "gemm":
        m, n, k = gemm_dims(case["op"], inputs)
        if min(m, n) == 1:
            shape = "gemv"
        elif k >= 4 * max(m, n):
            shape = "split_k"
        elif m % TILE or n % TILE or k % TILE:
            shape = "edge"
        else:
            shape = "aligned"
        return f"{shape}:{layout}"
    if kind in ("conv", "attention", "norm", "softmax"):
        last = inputs[0]["shape"][-1] if inputs and inputs[0]["shape"] else 1
        return f"{'aligned' if last % VECTOR == 0 else 'edge'}:{layout}"
    numel = prod(inputs[0]["shape"]) if inputs else 0
    broadcast = any(0 in s["stride"] for s in inputs)
    return f"{'vector' if numel % VECTOR == 0 else 'tail'}:{'broadcast' if broadcast else 'dense'}:{layout}"


def kernel_signature(case: dict[str, Any]) -> str:
    dtypes = ",".join(s["dtype"] for s in case["inputs"])
    return f"{case['op']}|{dtypes}|{tile_class(case)}"


def work_of(case: dict[str, Any]) -> int:
    """A size measure (multiply-adds for GEMMs, elements otherwise) for ordering and budgets."""
    if case["kernel_class"] == "gemm":
        m, n, k = gemm_dims(case["op"], case["inputs"])
        batch = prod(case["inputs"][-1]["shape"][:-2]) if len(case["inputs"][-1]["shape"]) > 2 else 1
        return batch * m * n * k
    return max((prod(s["shape"]) for s in case["inputs"]), default=0)


def deduplicate(recording: Recording) -> list[dict[str, Any]]:
    """One case per distinct (op, shapes, strides, dtypes, arguments), counting calls and phases."""
    cases: dict[str, dict[str, Any]] = {}
    for call in recording.calls:
        key = case_key(call)
        case = cases.get(key)
        if case is None:
            case = cases[key] = {
                "op": call.op, "kernel_class": call.kernel_class, "inputs": call.inputs,
                "args": call.args, "kwargs": call.kwargs, "count": 0, "phases": [],
            }
        case["count"] += 1
        if call.phase not in case["phases"]:
            case["phases"].append(call.phase)
    for case in cases.values():
        case["tile_class"] = tile_class(case)
        case["id"] = "c" + hashlib.sha256(canonical_json({k: case[k] for k in ("op", "inputs", "args", "kwargs")}).encode()).hexdigest()[:12]
    return list(cases.values())


@dataclass(frozen=True)
class Compressed:
    kept: list[dict[str, Any]]
    dropped: list[dict[str, Any]]
    classes: int


def compress(cases: Sequence[dict[str, Any]], budget: int) -> Compressed:
    """Keep every kernel class once (its most frequent case), then the most frequent others up to ``budget``.

    The budget never removes a kernel class: when there are more classes than the budget, all
    classes are kept and the catalog says so.
    """
    order = sorted(cases, key=lambda c: (-c["count"], -work_of(c), c["id"]))
    representative: dict[str, dict[str, Any]] = {}
    for case in order:
        representative.setdefault(kernel_signature(case), case)
    kept_ids = {c["id"] for c in representative.values()}
    for case in order:
        if len(kept_ids) >= budget:
            break
        kept_ids.add(case["id"])
    kept = [c for c in order if c["id"] in kept_ids]
    dropped = [
        {"id": c["id"], "op": c["op"], "shapes": [s["shape"] for s in c["inputs"]],
         "dtypes": [s["dtype"] for s in c["inputs"]], "count": c["count"],
         "represented_by": representative[kernel_signature(c)]["id"],
         "reason": "budget: its kernel class is covered by the case named in represented_by"}
        for c in order if c["id"] not in kept_ids
    ]
    return Compressed(kept, dropped, len(representative))


def collectives_of(recording: Recording) -> list[dict[str, Any]]:
    counts = Counter(canonical_json(c) for c in recording.collectives)
    return [dict(json.loads(key), count=n) for key, n in sorted(counts.items())]


def build_catalog(recording: Recording, model: dict[str, Any], budget: int = 64) -> dict[str, Any]:
    """The catalog document for a recording; ``model`` describes the configuration it came from."""
    cases = deduplicate(recording)
    compressed = compress(cases, budget)
    return {
        "catalog_version": CATALOG_VERSION,
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "torch": torch.__version__,
        "model": model,
        "budget": budget,
        "stats": {
            "recorded_calls": len(recording.calls),
            "distinct_cases": len(cases),
            "kernel_classes": compressed.classes,
            "kept": len(compressed.kept),
            "dropped": len(compressed.dropped),
            "over_budget": max(0, compressed.classes - budget),
            "not_replayable": dict(sorted(recording.not_replayable.items())),
        },
        "cases": compressed.kept,
        "collectives": collectives_of(recording),
        "dropped": compressed.dropped,
    }


def write_catalog(catalog: dict[str, Any], path: str | Path) -> None:
    from sdc.files import atomic_write

    atomic_write(Path(path), json.dumps(catalog, indent=1, sort_keys=True) + "\n")


def read_catalog(path: str | Path) -> dict[str, Any]:
    """A catalog file, validated; CatalogError names the file and the first problem."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise CatalogError(f"catalog {path}: no such file (write one with 'sdc harvest')") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CatalogError(f"catalog {path}: not readable JSON ({exc})") from None
    validate(document, f"catalog {path}")
    return document


def validate(document: Any, name: str = "catalog") -> None:
    """The checks of docs/schema/catalog.json that replay depends on (no jsonschema at run time)."""

    def fail(where: str, what: str) -> None:
        raise CatalogError(f"{name}: {where}: {what} (see docs/schema/catalog.json)")

    if not isinstance(document, dict):
        fail("(top level)", "must be a JSON object")
    if document.get("catalog_version") != CATALOG_VERSION:
        fail("catalog_version", f"{document.get('catalog_version')!r} is not {CATALOG_VERSION}; harvest it again with this sdc")
    if not isinstance(document.get("model"), dict):
        fail("model", "must be an object naming the configuration the catalog came from")
    cases = document.get("cases")
    if not isinstance(cases, list):
        fail("cases", "must be a list")
    seen = set()
    for i, case in enumerate(cases):
        if not isinstance(case, dict):
            fail(f"cases/{i}", "must be an object")
        for key, kind in (("id", str), ("op", str), ("kernel_class", str), ("inputs", list), ("args", list),
                          ("kwargs", dict), ("count", int)):
            if not isinstance(case.get(key), kind):
                fail(f"cases/{i}/{key}", f"must be a {kind.__name__}")
        if not ID_PATTERN.fullmatch(case["id"]) or case["id"] in seen:
            fail(f"cases/{i}/id", f"{case['id'][:40]!r} must be c + 12 hex digits, unique")
        seen.add(case["id"])
        for j, spec in enumerate(case["inputs"]):
            if not isinstance(spec, dict) or spec.get("dtype") not in INPUT_DTYPES:
                fail(f"cases/{i}/inputs/{j}/dtype", f"must be one of {', '.join(INPUT_DTYPES)}")
            for key in ("shape", "stride"):
                value = spec.get(key)
                if not isinstance(value, list) or not all(isinstance(v, int) and v >= 0 for v in value):
                    fail(f"cases/{i}/inputs/{j}/{key}", "must be a list of integers >= 0")
            if len(spec["shape"]) != len(spec["stride"]):
                fail(f"cases/{i}/inputs/{j}", "shape and stride differ in length")
