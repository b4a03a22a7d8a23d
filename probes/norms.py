"""Normalisation and reduction probes: layer_norm, RMS norm, softmax, and sum/mean/max over large tensors.

Case shape is ``(rows, hidden)`` for the row-wise ops and ``(elements,)`` for the full
reductions; ``params["op"]`` names the op.

Determinism: all of these are deterministic in PyTorch on CPU and CUDA (tree reductions
with a fixed order for a given size and device) and are judged bit for bit — except
``scatter_add``, which uses atomics on GPUs: its order of additions changes run to run, so on
accelerators it is judged by tolerance only and reports no digest for the cohort.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from probes.base import Case, Outcome, Probe
from probes.harness import (
    DTYPES,
    UNIT_ROUNDOFF,
    generator,
    judge,
    randn,
    run_repeats,
    throughput,
)
from probes.reference import cached, reference_key
from probes.sizing import stream_bandwidth, host_seconds, sized

ROW_OPS = ("layer_norm", "rms_norm", "softmax")
REFERENCE_ROWS = 256  # rows checked against fp64 on large row-wise cases (rows are independent)
_FULL_REFERENCE_ELEMENTS = 1 << 24
REDUCTIONS = ("sum", "mean", "max", "scatter_add")
BUCKETS = 1024


def _rms_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    if hasattr(F, "rms_norm"):
        return F.rms_norm(x, (x.shape[-1],), eps=eps)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _apply(op: str, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    if op == "layer_norm":
        return F.layer_norm(x, (x.shape[-1],), eps=1e-5)
    if op == "rms_norm":
        return _rms_norm(x)
    if op == "softmax":
        return torch.softmax(x, dim=-1)
    if op == "sum":
        return x.sum().reshape(1)
    if op == "mean":
        return x.mean().reshape(1)
    if op == "max":
        return x.max().reshape(1)
    if op == "scatter_add":
        assert index is not None
        return torch.zeros(BUCKETS, dtype=x.dtype, device=x.device).scatter_add_(0, index, x)
    raise ValueError(f"unknown op {op}")


class NormsProbe(Probe):
    name = "norms"
    version = 1

    def cases(self, suite: str) -> list[Case]:
        sizes = {"quick": ((128, 1024), 1 << 19), "standard": ((4096, 4096), 1 << 24)}.get(suite)
        if sizes is None:
            return []
        rows, elements = sizes
        return [Case(op, rows, "fp32", {"op": op}) for op in ROW_OPS] + [
            Case(op, (elements,), "fp32", {"op": op}) for op in REDUCTIONS
        ]

    def cases_for(self, suite: str, device: torch.device) -> list[Case]:
        base = self.cases(suite)
        if not base:
            return base
        rows, elements = ((8192, 8192), 1 << 27) if suite == "quick" else ((32768, 8192), 1 << 29)
        large = [Case(op, rows, "bf16", {"op": op}) for op in ROW_OPS] + [
            Case(op, (elements,), "fp32", {"op": op}) for op in REDUCTIONS
        ]
        return base + sized(device, large, lambda case: self.estimate_s(case, device), lambda case: 16.0 * math.prod(case.shape))

    def estimate_s(self, case: Case, device: torch.device) -> float:
        elements = 1
        for s in case.shape:
            elements *= s
        # A row op or a reduction reads and writes each element a few times: 12 bytes each.
        return 0.05 + 3 * 12.0 * elements / stream_bandwidth(device, cpu=5e9) + host_seconds(device, elements)

    def deterministic(self, case: Case, device: torch.device) -> bool:
        return not (case.params.get("op") == "scatter_add" and device.type != "cpu")

    def run(self, case: Case, device: torch.device, seed: int, repeats: int, faults=None) -> Outcome:
        op = str(case.params["op"])
        x = randn(case.shape, seed, "norms", op, case.shape, dtype=DTYPES[case.dtype])
        if op == "softmax":
            x = x * 4  # spread the logits so the exponentials span several binades
        index = None
        if op == "scatter_add":
            index = torch.randint(0, BUCKETS, (x.numel(),), generator=generator(seed, "norms-index", case.shape))

        rows = None
        if op in ROW_OPS and x.numel() > _FULL_REFERENCE_ELEMENTS:
            rows = torch.randperm(x.shape[0], generator=generator(seed, "norms-rows", case.shape))[:REFERENCE_ROWS].sort().values

        def fp64_reference() -> torch.Tensor:
            value = _apply(op, (x if rows is None else x[rows]).to(torch.float64), index)
            magnitude = _apply(op, x.to(torch.float64).abs(), index) if op in REDUCTIONS else value.abs()
            return torch.stack([value, magnitude])

        ref = cached(reference_key(self.name, self.version, case, seed), fp64_reference)
        x_dev = x.to(device)
        index_dev = index.to(device) if index is not None else None
        result = run_repeats(lambda: _apply(op, x_dev, index_dev), device, repeats, faults, self.name, case.name)
        u = UNIT_ROUNDOFF[case.dtype]
        u_acc = UNIT_ROUNDOFF["fp32"] if case.dtype in ("bf16", "fp16") else u
        terms = case.shape[-1] if op in ROW_OPS else x.numel()
        if op == "max":
            bound = torch.zeros_like(ref[0])  # exact: the max is one of the inputs
        elif op in ROW_OPS:
            # Statistics over `hidden` terms, then an elementwise op on values of order 1.
            bound = 8.0 * (terms**0.5 * u_acc + u) * (ref[1] + 1.0 if op != "softmax" else ref[1] + float(ref[1].max()) / terms)
        else:
            bound = 4.0 * (terms**0.5 * u_acc) * ref[1] + u * ref[0].abs()
        observed = None if rows is None else result.first[rows.to(result.first.device)]
        outcome = judge(result, ref[0], bound, deterministic=self.deterministic(case, device), observed=observed)
        return throughput(outcome, x.numel() * x.element_size() * (1 if op in REDUCTIONS else 2), "GB/s")


PROBES = (NormsProbe,)
