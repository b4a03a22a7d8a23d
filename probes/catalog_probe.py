"""The catalog probe family: replay every case of a harvested catalog on a chip.

Each catalog case (``probes.catalog``) is one ATen op at the model's own shapes, strides and
dtypes. Inputs are seeded and made on the CPU (identical bytes on every chip), then the op
runs on the chip ``repeats`` times and is judged by the three references of every probe: an
fp64 reference on the CPU (sampled output rows for large GEMMs; cached), its own repeats bit
for bit, and — in the analysis — the cohort majority digest. The bound comes from the
tolerance table (``probes.tolerance``), and every result names the row it used and carries
its error statistics in ``telemetry['error_stats']`` for ``sdc precision``.

Without a catalog (``path`` unset: ``sdc sweep --catalog FILE`` or ``[agent] catalog``) the
family has no cases.
"""

from __future__ import annotations

from math import prod
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from probes.base import Case, Outcome, Probe, Unsupported
from probes.catalog import read_catalog
from probes.harness import generator, run_repeats, strict_determinism, throughput
from probes.harvest import DTYPES_BY_NAME, SDPA_OP
from probes.reference import cached, reference_key
from probes.tolerance import Check, check, load_table

REFERENCE_ROWS = 64  # GEMM output rows checked against fp64 on large shapes
_FULL_REFERENCE_MACS = 1 << 27
_ACCUMULATING = ("gemm", "conv", "reduce")  # magnitude = the op over |inputs|
_STRICT = ("attention", "conv")
# Ops whose error follows the tensor's scale, not each element's: |ref| + rms(ref) is the magnitude.
_TENSOR_SCALED = ("norm", "softmax", "attention", "composite")  # fused kernels with faster non-deterministic variants


def _packet(op: str) -> str:
    return op.split(".")[1] if op.startswith("aten.") else op.split(".", 1)[1]


def make_inputs(params: dict[str, Any], seed: int, device: torch.device) -> list[torch.Tensor]:
    """The case's operands on ``device``, with the recorded strides; the same bytes on every chip."""
    tensors = []
    for j, spec in enumerate(params["inputs"]):
        shape, stride = spec["shape"], spec["stride"]
        storage = 1 + sum((s - 1) * st for s, st in zip(shape, stride)) if all(shape) else 0
        gen = generator(seed, "catalog", params["id"], j)
        dtype = DTYPES_BY_NAME[spec["dtype"]]
        if "int_range" in spec:
            base = torch.randint(0, int(spec["int_range"]), (storage,), generator=gen, dtype=dtype)
        elif dtype == torch.bool:
            base = torch.rand(storage, generator=gen) < 0.5
        else:
            values = torch.randn(storage, generator=gen, dtype=torch.float64)
            if spec.get("domain") == "positive":
                values = values.abs() + 0.5
            base = values.to(dtype)
        tensors.append(torch.as_strided(base.to(device), shape, stride))
    return tensors


def _decode(value: Any, tensors: list[torch.Tensor], device: torch.device, reference: bool) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors, device, reference) for v in value]
    if isinstance(value, dict):
        if "t" in value:
            return tensors[value["t"]]
        if "dtype" in value:
            dtype = DTYPES_BY_NAME[value["dtype"]]
            return torch.float64 if reference and dtype.is_floating_point else dtype
        if "device" in value:
            return device
        if "enum" in value:
            return getattr(torch, value["enum"])
        if "float" in value:
            return float(value["float"])
    if reference and isinstance(value, float):
        # Kernels take Python floats in fp32 opmath; the reference uses the same scalar.
        return float(torch.tensor(value, dtype=torch.float32))
    return value


def _decode_kwargs(kwargs: dict[str, Any], tensors: list[torch.Tensor], device: torch.device, reference: bool) -> dict[str, Any]:
    return {k: _decode(v, tensors, device, reference) for k, v in kwargs.items()}


def op_callable(op: str) -> Callable[..., Any]:
    if op == SDPA_OP:
        return F.scaled_dot_product_attention
    _, packet, overload = op.split(".")
    return getattr(getattr(torch.ops.aten, packet), overload)


def output_parts(result: Any) -> list[torch.Tensor]:
    if isinstance(result, torch.Tensor):
        return [result]
    return [t for t in (result if isinstance(result, (tuple, list)) else []) if isinstance(t, torch.Tensor)]


def flatten(parts: list[torch.Tensor]) -> torch.Tensor:
    """One tensor of all outputs (upcast losslessly to the widest float), for digests and repeats."""
    if len(parts) == 1:
        return parts[0].contiguous().reshape(-1)
    widest = max((p.dtype for p in parts), key=lambda d: torch.finfo(d).bits if d.is_floating_point else 0)
    return torch.cat([p.reshape(-1).to(widest) for p in parts])


def gemm_macs(params: dict[str, Any]) -> int:
    """Multiply-adds of a GEMM case (its last two operands are A and B; a bias comes first)."""
    a, b = params["inputs"][-2]["shape"], params["inputs"][-1]["shape"]
    return prod(a[:-2] or [1]) * a[-2] * a[-1] * b[-1]


def gemm_rows(params: dict[str, Any], seed: int) -> Optional[torch.Tensor]:
    """Output rows the reference covers for a large GEMM (None: all of it)."""
    if params["kernel_class"] != "gemm":
        return None
    m = params["inputs"][-2]["shape"][-2]
    if gemm_macs(params) <= _FULL_REFERENCE_MACS or m <= REFERENCE_ROWS:
        return None
    return torch.randperm(m, generator=generator(seed, "catalog-rows", params["id"]))[:REFERENCE_ROWS].sort().values


def _restrict_rows(params: dict[str, Any], tensors: list[torch.Tensor], rows: torch.Tensor) -> list[torch.Tensor]:
    """Operands whose product is the chosen output rows: rows of A (and of a 2-D bias)."""
    out = list(tensors)
    a = len(tensors) - 2
    out[a] = tensors[a].index_select(-2, rows)
    if len(tensors) == 3 and tensors[0].dim() >= 2 and tensors[0].shape[-2] == tensors[a].shape[-2]:
        out[0] = tensors[0].index_select(-2, rows)
    return out


def output_layout(params: dict[str, Any], rows: Optional[torch.Tensor]) -> list[torch.Tensor]:
    """The op's outputs as meta tensors (shape, dtype), for all rows or the sampled ones."""
    meta = [torch.empty_strided(s["shape"], s["stride"], dtype=DTYPES_BY_NAME[s["dtype"]], device="meta")
            for s in params["inputs"]]
    if rows is not None:
        meta = _restrict_rows(params, meta, torch.zeros(len(rows), dtype=torch.long, device="meta"))
    device = torch.device("meta")
    return output_parts(op_callable(params["op"])(*_decode(params["args"], meta, device, False),
                                                  **_decode_kwargs(params["kwargs"], meta, device, False)))


def reduction_length(params: dict[str, Any]) -> int:
    """k of the accumulation bound: terms summed into one output element."""
    kind, shapes, op = params["kernel_class"], [s["shape"] for s in params["inputs"]], params["op"]
    if kind == "gemm":
        return shapes[-2][-1]
    if kind == "conv":
        weight = shapes[1] if _packet(op) == "convolution" else shapes[2]
        k = prod(weight[1:])
        if _packet(op) == "convolution_backward":
            k = max(k, shapes[0][0] * prod(shapes[0][2:]))
        return k
    if kind == "attention":
        return shapes[1][-2] + shapes[0][-1]
    if kind in ("reduce", "softmax", "norm"):
        whole = prod(shapes[0])
        if kind == "softmax":
            dim = params["args"][1] if len(params["args"]) > 1 and isinstance(params["args"][1], int) else -1
            return shapes[0][dim] if shapes[0] else 1
        if kind == "norm":
            normalized = params["args"][1] if len(params["args"]) > 1 and isinstance(params["args"][1], list) else shapes[0][-1:]
            return prod(normalized) if normalized else 1
        return max(1, whole // max(1, _reduced_numel(params)))
    return 1


def _reduced_numel(params: dict[str, Any]) -> int:
    tensor = torch.empty(params["inputs"][0]["shape"], device="meta")
    args = _decode(params["args"], [tensor], torch.device("meta"), False)
    return op_callable(params["op"])(*args, **_decode_kwargs(params["kwargs"], [tensor], torch.device("meta"), False)).numel()


class CatalogProbe(Probe):
    name = "catalog"
    version = 1
    path: str = ""  # set by the sweep (probe settings) from --catalog / [agent] catalog
    tolerance_overrides: list = []  # [[tolerance.rows]] of the config file

    def __init__(self) -> None:
        self._loaded: tuple[str, list[Case]] | None = None
        self._table = None

    def cases(self, suite: str) -> list[Case]:
        if not self.path or suite == "burn":
            return []
        if self._loaded is None or self._loaded[0] != self.path:
            catalog = read_catalog(self.path)
            self._loaded = (self.path, [self._case(c) for c in catalog["cases"]])
        return list(self._loaded[1])

    @staticmethod
    def _case(entry: dict[str, Any]) -> Case:
        primary = entry["inputs"][0]["shape"] if entry["inputs"] else []
        params = {k: entry[k] for k in ("id", "op", "kernel_class", "inputs", "args", "kwargs")}
        return Case(_packet(entry["op"]), tuple(primary), entry["inputs"][0]["dtype"] if entry["inputs"] else "fp32", params)

    def table(self):
        if self._table is None:
            self._table = load_table(self.tolerance_overrides)
        return self._table

    def estimate_s(self, case: Case, device: torch.device) -> float:
        params = case.params
        work = gemm_macs(params) if params["kernel_class"] == "gemm" else max(
            (prod(s["shape"]) for s in params["inputs"]), default=1)
        rate = 2e9 if device.type == "cpu" else 1e13
        return 0.02 + 4 * work / rate

    def run(self, case: Case, device: torch.device, seed: int, repeats: int, faults=None) -> Outcome:
        params = case.params
        tensors = make_inputs(params, seed, device)
        fn = op_callable(params["op"])
        args = _decode(params["args"], tensors, device, False)
        kwargs = _decode_kwargs(params["kwargs"], tensors, device, False)
        strict = params["kernel_class"] in _STRICT and device.type != "cpu"

        def compute() -> torch.Tensor:
            try:
                return _compute()
            except RuntimeError as exc:
                if "expected scalar type" in str(exc):
                    # e.g. the CPU's bf16 layer-norm backward wants bf16 statistics, the meta
                    # device recorded fp32 ones: the case does not exist on this backend.
                    raise Unsupported(f"this backend's kernel takes other dtypes than harvested: {exc}") from None
                raise

        def _compute() -> torch.Tensor:
            if strict:
                with strict_determinism():
                    return flatten(output_parts(fn(*args, **kwargs)))
            return flatten(output_parts(fn(*args, **kwargs)))

        result = run_repeats(compute, device, repeats, faults, self.name, case.name)
        outcome = self.judge_output(case, seed, result.first, device.type)
        outcome.repeats, outcome.distinct_repeat_digests = len(result.timings), result.distinct
        outcome.timings, outcome.digest = list(result.timings), result.digests[0]
        if result.distinct > 1:
            text = f"{result.distinct} distinct outputs over {len(result.timings)} repeats"
            outcome.message = f"{outcome.message}; {text}" if outcome.status == "mismatch" else text
            outcome.status = "mismatch"
        if params["kernel_class"] == "gemm":
            return throughput(outcome, 2.0 * gemm_macs(params), "TFLOP/s")
        return outcome

    def _reference(self, case: Case, seed: int) -> tuple[list[torch.Tensor], list[Optional[torch.Tensor]]]:
        """fp64 outputs (and magnitudes, for accumulating ops) on the CPU, cached."""
        params = case.params
        rows = gemm_rows(params, seed)

        def compute() -> torch.Tensor:
            cpu = torch.device("cpu")
            host = [t.to(torch.float64) if t.dtype.is_floating_point else t for t in make_inputs(params, seed, cpu)]
            if rows is not None:
                host = _restrict_rows(params, host, rows)
            fn = op_callable(params["op"])
            value = output_parts(fn(*_decode(params["args"], host, cpu, True), **_decode_kwargs(params["kwargs"], host, cpu, True)))
            parts = [v.to(torch.float64).reshape(-1) for v in value]
            if params["kernel_class"] in _ACCUMULATING:
                absolute = [t.abs() if t.dtype.is_floating_point else t for t in host]
                magnitude = output_parts(fn(*_decode(params["args"], absolute, cpu, True),
                                            **_decode_kwargs(params["kwargs"], absolute, cpu, True)))
                parts += [m.to(torch.float64).reshape(-1) for m in magnitude]
            return torch.cat(parts + [torch.tensor([float(len(value))], dtype=torch.float64)])

        packed = cached(reference_key(self.name, self.version, case, seed), compute)
        n_parts = int(packed[-1])
        sizes = [p.numel() for p in output_layout(params, rows)]
        values, offset = [], 0
        for size in sizes[:n_parts]:
            values.append(packed[offset : offset + size])
            offset += size
        magnitudes: list[Optional[torch.Tensor]] = [None] * n_parts
        if params["kernel_class"] in _ACCUMULATING:
            for i, size in enumerate(sizes[:n_parts]):
                magnitudes[i] = packed[offset : offset + size]
                offset += size
        return values, magnitudes

    def judge_output(self, case: Case, seed: int, first: torch.Tensor, vendor: str) -> Outcome:
        """Check each output against its fp64 reference under its tolerance row; keep the worst."""
        params = case.params
        values, magnitudes = self._reference(case, seed)
        rows = gemm_rows(params, seed)
        layout = output_layout(params, None)
        names = {v: k for k, v in DTYPES_BY_NAME.items()}
        k = reduction_length(params)
        checks: list[Check] = []
        offset = 0
        for i, ref in enumerate(values):
            part = layout[i]
            observed = first[offset : offset + part.numel()].to(part.dtype)
            offset += part.numel()
            if rows is not None:
                observed = observed.reshape(part.shape).index_select(-2, rows.to(observed.device)).reshape(-1)
            dtype = _judged_dtype(names.get(part.dtype, "fp32"), case.dtype)
            row = self.table().lookup(params["kernel_class"], dtype, vendor)
            if row is None:
                raise Unsupported(f"no tolerance row for {params['kernel_class']} x {dtype}; add one in [[tolerance.rows]]")
            magnitude = magnitudes[i]
            if magnitude is None and params["kernel_class"] in _TENSOR_SCALED:
                finite = ref[torch.isfinite(ref)]
                magnitude = ref.abs() + (finite.square().mean().sqrt() if finite.numel() else 0.0)
            checks.append(check(row, observed, ref, dtype, k, magnitude))
        return _outcome(checks)


def _judged_dtype(output: str, computed: str) -> str:
    """The coarser of the output dtype and the case's compute dtype: a bf16 layer norm's fp32
    statistics carry bf16 precision on some backends."""
    order = ("fp64", "fp32", "bf16", "fp16")
    if output not in order or computed not in order:
        return output
    return computed if computed in ("bf16", "fp16") and output in ("fp64", "fp32") else output


def _outcome(checks: list[Check]) -> Outcome:
    worst = max(checks, key=lambda c: (not c.passed, c.worst_ratio))
    elements = sum(c.elements for c in checks) or 1
    stats = worst.stats()
    stats.update(
        elements=elements,
        mean_rel_err=sum(c.mean_rel_err * c.elements for c in checks) / elements,
        mean_ulp=sum(c.mean_ulp * c.elements for c in checks) / elements,
        ulp_histogram=[sum(c.ulp_histogram[b] for c in checks) for b in range(len(worst.ulp_histogram))],
        share_over_bound=sum(c.share_over * c.elements for c in checks) / elements,
    )
    failed = [c for c in checks if not c.passed]
    return Outcome(
        status="mismatch" if failed else "ok",
        max_abs_err=worst.max_abs_err,
        max_rel_err=worst.max_rel_err,
        error_bound=worst.bound_at_worst,
        message="; ".join(c.message for c in failed) if failed else f"within tolerance row {worst.row_id}",
        telemetry={"error_stats": stats},
    )


PROBES = (CatalogProbe,)
