"""The tolerance table: error bounds keyed by operator class x dtype (x vendor), and the check.

One versioned table ships with sdc (``probes/data/tolerance_v1.json``) and replaces ad-hoc
bounds for catalog cases. Four rules, after the acceptance rules of Ascend msprobe (ULP and
small-value rules), Cambricon mlu-ops (pure IO and arithmetic bit-exact, accumulations by
relative error) and FlagGems / PaddleAPEX (per-op x dtype rows, per-vendor overrides):

- ``exact``: bit-equal to the fp64 result rounded to the output dtype (data movement, casts,
  + - * /: IEEE rounds these exactly, so any other bit is a wrong answer);
- ``ulp``: at most ``ulp`` units in the last place of the output dtype, measured at
  ``max(|ref|, small_value)`` so results near zero are judged absolutely (transcendentals);
- ``accumulate``: ``factor * (sqrt(k) * u_acc * magnitude + u_out * |ref|) + small_value * rms(ref)``
  where ``k`` is the reduction length and ``magnitude`` the op over |inputs| (GEMM, conv,
  reductions, norms, softmax, attention): random rounding errors grow like sqrt(k);
- ``relative``: ``rtol * |ref| + atol`` with ``share_allowed`` of elements allowed over it
  (the "dual thousandths" style, for user rows).

Rows are looked up most specific first (vendor, then dtype, then ``*``). Users override or add
rows in the config file's ``[[tolerance.rows]]``; every check names the row it used.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from typing import Any, Iterable, Mapping, Optional, Sequence

import torch

TABLE_FILE = "tolerance_v1.json"
RULES = ("exact", "ulp", "accumulate", "relative")
UNIT_ROUNDOFF = {"fp64": 2.0**-53, "fp32": 2.0**-24, "tf32": 2.0**-11, "bf16": 2.0**-8, "fp16": 2.0**-11}
TORCH_DTYPE = {"fp64": torch.float64, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# ULP histogram buckets (upper edges, inclusive): 0, <=0.5 (correctly rounded), 1, 2, 4, 16, more.
ULP_EDGES = (0.0, 0.5, 1.0, 2.0, 4.0, 16.0, math.inf)


class ToleranceError(ValueError):
    """A tolerance row that cannot be used; the message names the row and the field."""


@dataclass(frozen=True)
class ToleranceRow:
    """One bound: operator class x dtype (x vendor) -> rule and its numbers."""

    op_class: str
    dtype: str
    rule: str
    vendor: str = "*"
    ulp: float = 0.0
    factor: float = 4.0
    accumulate: Optional[str] = None
    small_value: float = 0.0
    rtol: float = 0.0
    atol: float = 0.0
    share_allowed: float = 0.0
    source: str = "builtin-v1"
    why: str = ""

    @property
    def row_id(self) -> str:
        return f"{self.op_class}/{self.dtype}/{self.vendor}@{self.source}"


def row_from_dict(values: Mapping[str, Any], source: str) -> ToleranceRow:
    """A row from its table or config form; ToleranceError says which field is wrong."""
    known = {f.name for f in fields(ToleranceRow)} - {"source"}
    name = f"tolerance row {dict(values)!r}"
    unknown = sorted(set(values) - known)
    if unknown:
        raise ToleranceError(f"{name}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    for required in ("op_class", "dtype", "rule"):
        if not isinstance(values.get(required), str) or not values.get(required):
            raise ToleranceError(f"{name}: field '{required}' must be a non-empty string")
    if values["rule"] not in RULES:
        raise ToleranceError(f"{name}: rule must be one of {', '.join(RULES)}")
    numbers = {}
    for key in ("ulp", "factor", "small_value", "rtol", "atol", "share_allowed"):
        if key in values:
            value = values[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ToleranceError(f"{name}: field '{key}' must be a finite number >= 0")
            numbers[key] = float(value)
    accumulate = values.get("accumulate")
    if accumulate is not None and accumulate not in UNIT_ROUNDOFF:
        raise ToleranceError(f"{name}: accumulate must be one of {', '.join(UNIT_ROUNDOFF)}")
    return ToleranceRow(
        op_class=values["op_class"], dtype=values["dtype"], rule=values["rule"],
        vendor=str(values.get("vendor", "*")), accumulate=accumulate, source=source,
        why=str(values.get("why", "")), **numbers,
    )


@dataclass(frozen=True)
class ToleranceTable:
    version: int
    rows: tuple[ToleranceRow, ...]

    def lookup(self, op_class: str, dtype: str, vendor: str = "*") -> Optional[ToleranceRow]:
        """The most specific row for the key: vendor beats ``*``, dtype beats ``*``; later rows
        (config overrides) beat earlier ones of the same specificity."""
        best, best_rank = None, -1
        for row in self.rows:
            if row.op_class != op_class or row.vendor not in (vendor, "*") or row.dtype not in (dtype, "*"):
                continue
            rank = 2 * (row.vendor != "*") + (row.dtype != "*")
            if rank >= best_rank:
                best, best_rank = row, rank
        return best

    def with_overrides(self, overrides: Iterable[Mapping[str, Any]]) -> "ToleranceTable":
        extra = tuple(row_from_dict(values, "config") for values in overrides)
        return replace(self, rows=self.rows + extra)


def builtin_table() -> ToleranceTable:
    text = resources.files("probes").joinpath("data", TABLE_FILE).read_text()
    data = json.loads(text)
    version = int(data["table_version"])
    return ToleranceTable(version, tuple(row_from_dict(r, f"builtin-v{version}") for r in data["rows"]))


def load_table(overrides: Sequence[Mapping[str, Any]] | None = None) -> ToleranceTable:
    """The shipped table plus the config file's ``[[tolerance.rows]]`` (which win on ties)."""
    table = builtin_table()
    return table.with_overrides(overrides) if overrides else table


@dataclass
class Check:
    """What checking one output against its fp64 reference under one row found."""

    passed: bool
    row_id: str
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    mean_rel_err: float = 0.0
    max_ulp: float = 0.0
    mean_ulp: float = 0.0
    ulp_histogram: list[int] = field(default_factory=list)
    share_over: float = 0.0
    worst_index: int = 0
    worst_ratio: float = 0.0
    bound_at_worst: float = 0.0
    elements: int = 0
    message: str = ""

    def stats(self) -> dict[str, Any]:
        """The error statistics a probe result carries (``telemetry['error_stats']``)."""
        return {
            "tolerance_row": self.row_id, "elements": self.elements,
            "max_rel_err": _finite(self.max_rel_err), "mean_rel_err": _finite(self.mean_rel_err),
            "max_ulp": _finite(self.max_ulp), "mean_ulp": _finite(self.mean_ulp),
            "ulp_histogram": list(self.ulp_histogram), "share_over_bound": self.share_over,
            "worst_ratio": _finite(self.worst_ratio),
        }


def _finite(value: float) -> Optional[float]:
    return float(value) if math.isfinite(value) else None


def ulp_of(x: torch.Tensor, dtype: str) -> torch.Tensor:
    """The spacing of ``dtype`` numbers at |x| (fp64 tensor in, fp64 out); subnormals share the tiny's."""
    info = torch.finfo(TORCH_DTYPE.get(dtype, torch.float32))
    mantissa = round(-math.log2(info.eps))
    exponent = torch.floor(torch.log2(x.abs().clamp_min(info.tiny)))
    return torch.exp2(exponent - mantissa)


def rounded(ref: torch.Tensor, dtype: str) -> torch.Tensor:
    """The fp64 reference correctly rounded to ``dtype`` (fp64 result)."""
    return ref.to(TORCH_DTYPE.get(dtype, torch.float32)).to(torch.float64)


def element_bound(
    row: ToleranceRow, ref: torch.Tensor, out_dtype: str, k: int = 1, magnitude: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Absolute bound per element of ``ref`` (fp64) under ``row``; zero for ``exact``."""
    if row.rule == "exact":
        return torch.zeros_like(ref)
    if row.rule == "ulp":
        return row.ulp * ulp_of(ref.abs().clamp_min(row.small_value), out_dtype)
    if row.rule == "relative":
        return row.rtol * ref.abs() + row.atol
    u_out = UNIT_ROUNDOFF.get(out_dtype, 2.0**-24)
    u_acc = UNIT_ROUNDOFF[row.accumulate or out_dtype] if (row.accumulate or out_dtype) in UNIT_ROUNDOFF else u_out
    mag = ref.abs() if magnitude is None else magnitude.abs()
    finite = ref[torch.isfinite(ref)]
    rms = float(finite.square().mean().sqrt()) if finite.numel() else 0.0
    return row.factor * (math.sqrt(max(k, 1)) * u_acc * mag + u_out * ref.abs()) + row.small_value * rms


def check(
    row: ToleranceRow, out: torch.Tensor, ref: torch.Tensor, out_dtype: str, k: int = 1,
    magnitude: Optional[torch.Tensor] = None,
) -> Check:
    """Judge ``out`` (any dtype) against the fp64 ``ref`` under ``row``; pure.

    Non-finite reference values must be matched exactly (NaN where NaN, the same infinity);
    a non-finite output where the reference is finite always fails.
    """
    out = out.detach().to("cpu", torch.float64).reshape(-1)
    ref = ref.detach().to("cpu", torch.float64).reshape(-1)
    result = Check(passed=True, row_id=row.row_id, elements=int(ref.numel()))
    if ref.numel() == 0:
        return result
    finite = torch.isfinite(ref)
    same = (torch.isnan(out) & torch.isnan(ref)) | (out == ref)
    bad_nonfinite = (~finite & ~same) | (finite & ~torch.isfinite(out))
    target = rounded(ref, out_dtype) if row.rule == "exact" else ref
    err = torch.where(finite & torch.isfinite(out), (out - target).abs(), torch.zeros_like(ref))
    raw = torch.where(finite & torch.isfinite(out), (out - ref).abs(), torch.zeros_like(ref))
    bound = element_bound(row, torch.where(finite, ref, torch.zeros_like(ref)), out_dtype, k, magnitude)
    over = (err > bound) | bad_nonfinite
    ratio = torch.where(bound > 0, err / bound.clamp_min(1e-300), torch.where(err > 0, torch.full_like(err, math.inf), err))
    ratio = torch.where(bad_nonfinite, torch.full_like(ratio, math.inf), ratio)
    floor = max(row.small_value, torch.finfo(TORCH_DTYPE.get(out_dtype, torch.float32)).tiny)
    rel = raw / ref.abs().clamp_min(floor)
    ulps = raw / ulp_of(ref.abs().clamp_min(row.small_value), out_dtype)
    rel_f, ulps_f = rel[finite], ulps[finite]
    result.worst_index = int(ratio.argmax())
    result.worst_ratio = float(ratio[result.worst_index])
    result.bound_at_worst = float(bound[result.worst_index])
    result.max_abs_err = float(raw.max())
    result.max_rel_err = float(rel_f.max()) if rel_f.numel() else 0.0
    result.mean_rel_err = float(rel_f.mean()) if rel_f.numel() else 0.0
    result.max_ulp = float(ulps_f.max()) if ulps_f.numel() else 0.0
    result.mean_ulp = float(ulps_f.mean()) if ulps_f.numel() else 0.0
    result.ulp_histogram = ulp_histogram(ulps_f)
    result.share_over = float(over.double().mean())
    allowed = row.share_allowed if row.rule == "relative" else 0.0
    result.passed = result.share_over <= allowed and not bool(bad_nonfinite.any())
    if not result.passed:
        i = result.worst_index
        result.message = (
            f"element {i}: value {float(out[i]):.6g}, reference {float(ref[i]):.6g}, error {float(err[i]):.3g} "
            f"over bound {float(bound[i]):.3g}; {result.share_over:.2%} of {result.elements} elements over "
            f"(tolerance row {row.row_id})"
        )
    return result


def ulp_histogram(ulps: torch.Tensor) -> list[int]:
    """Counts of elements per ULP bucket (``ULP_EDGES``): the distribution two stacks are compared by."""
    counts, lower = [], -1.0
    for edge in ULP_EDGES:
        counts.append(int(((ulps > lower) & (ulps <= edge)).sum()))
        lower = edge
    return counts
