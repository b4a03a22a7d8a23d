"""Precision across platforms and software stacks: findings about a stack, never about a chip.

Three kinds of stack finding, from the same probe and catalog results the chips are judged by:

- ``less_precise``: on one case, a platform (chip model x software stack) has measurably larger
  errors against the fp64 reference than the reference platform — "bf16 mm 4096x14336x4096:
  stack B's mean error is 3.1x stack A's" — with both distributions;
- ``bound_broken_by_stack``: every chip of a cohort (two or more) breaks the fp64 bound with
  the same digest — the kernel or library is wrong, not the chips (even in a fleet of two);
- ``software_changed``: after an upgrade, every chip that moved to the new stack gives a new
  digest where the old stack agreed: software changed the result, not hardware.

None of these quarantines a chip. ``without_stack_bound_breaks`` is the hook the ledger runs
before the chip analyses, so such cohorts never count against a chip. Pure, except
``load_precision_results`` at the bottom, which reads the store.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field, replace
from statistics import mean, median
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from sdc.analysis.evidence import MISMATCH, NO_DIGEST, STATUS_CODES, Evidence

OK_CODE = STATUS_CODES["ok"]


@dataclass(frozen=True)
class PrecisionConfig:
    """Thresholds of ``sdc precision`` (config file ``[precision]``).

    Args:
        ratio: a platform is less precise when its mean error is at least this many times the
            reference platform's.
        alpha: and either every sample is larger than every reference sample, or a one-sided
            Mann-Whitney test rejects "no larger" at this level (three samples a side or more).
        reference: the reference platform: a stack hash prefix or chip model; default the most
            precise platform of each case.
    """

    ratio: float = 2.0
    alpha: float = 0.01
    reference: Optional[str] = None


def precision_config(section: dict[str, Any], reference: Optional[str] = None, ratio: Optional[float] = None) -> PrecisionConfig:
    """The ``[precision]`` table merged with flags (flags win); ValueError names a bad key."""
    unknown = sorted(set(section) - {"ratio", "alpha", "reference"})
    if unknown:
        raise ValueError(f"config: [precision] unknown key(s) {', '.join(unknown)} (known: alpha, ratio, reference)")
    values = {"ratio": section.get("ratio", 2.0), "alpha": section.get("alpha", 0.01)}
    for key, low in (("ratio", 1.0), ("alpha", 0.0)):
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > low - (key == "ratio"):
            raise ValueError(f"config: [precision] {key} must be a number above {low:g}, got {value!r}")
    return PrecisionConfig(
        ratio=float(ratio if ratio is not None else values["ratio"]), alpha=float(values["alpha"]),
        reference=reference or section.get("reference") or None,
    )


@dataclass(frozen=True)
class PrecisionResult:
    """One judged result as the precision analysis sees it."""

    result_id: str
    chip_id: str
    chip_model: str
    stack_hash: str
    probe: str
    probe_version: int
    case: dict[str, Any]
    seed: int
    status: str
    digest: Optional[str]
    distinct: int
    max_rel_err: Optional[float]
    error_stats: dict[str, Any] = field(default_factory=dict)
    observed_at: float = 0.0

    @property
    def case_key(self) -> str:
        return json.dumps(self.case, sort_keys=True, separators=(",", ":"))

    @property
    def error(self) -> Optional[float]:
        """The statistic platforms are compared by: mean relative error, else the maximum."""
        value = self.error_stats.get("mean_rel_err")
        return float(value) if value is not None else self.max_rel_err


@dataclass
class StackFinding:
    kind: str
    probe: str
    case: dict[str, Any]
    chip_model: str
    stack: str
    summary: str
    reference_stack: Optional[str] = None
    ratio: Optional[float] = None
    p_value: Optional[float] = None
    tolerance_row: Optional[str] = None
    chips: list[str] = field(default_factory=list)
    result_ids: list[str] = field(default_factory=list)
    distributions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def case_label(probe: str, case: dict[str, Any]) -> str:
    """``catalog/mm bf16 32x64`` style: probe, case name, dtype, shape."""
    shape = "x".join(str(s) for s in case.get("shape", []))
    return f"{probe}/{case.get('name', '?')} {case.get('dtype', '')} {shape}".strip()


def _distribution(results: Sequence[PrecisionResult]) -> dict[str, Any]:
    errors = [r.error for r in results if r.error is not None]
    histogram = None
    for r in results:
        h = r.error_stats.get("ulp_histogram")
        if h:
            histogram = [a + b for a, b in zip(histogram, h)] if histogram else list(h)
    shares = [r.error_stats.get("share_over_bound") for r in results if r.error_stats.get("share_over_bound") is not None]
    return {
        "n": len(errors), "mean_rel_err": errors, "max_rel_err": [r.max_rel_err for r in results],
        "mean": mean(errors) if errors else None, "median": median(errors) if errors else None,
        "ulp_histogram": histogram, "share_over_bound": mean(shares) if shares else None,
        "chips": sorted({r.chip_id for r in results}),
    }


def _larger(worse: list[float], better: list[float], alpha: float) -> tuple[bool, Optional[float]]:
    """Whether ``worse`` is measurably larger: every sample above every reference sample, or a
    one-sided Mann-Whitney test at ``alpha`` (three samples a side or more)."""
    separated = min(worse) > max(better)
    p = None
    if min(len(worse), len(better)) >= 3:
        from scipy.stats import mannwhitneyu

        p = float(mannwhitneyu(worse, better, alternative="greater").pvalue)
    return separated or (p is not None and p < alpha), p


def platform_name(model: str, stack: str, labels: dict[str, str]) -> str:
    return f"{model} / {labels.get(stack, stack[:12])}"


def find_less_precise(
    results: Iterable[PrecisionResult], cfg: PrecisionConfig, labels: dict[str, str] | None = None
) -> list[StackFinding]:
    """Per case, each platform whose errors are measurably larger than the reference platform's."""
    labels = labels or {}
    by_case: dict[tuple, dict[tuple[str, str], list[PrecisionResult]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r.status in ("ok", "mismatch") and r.error is not None:
            by_case[(r.probe, r.probe_version, r.case_key)][(r.chip_model, r.stack_hash)].append(r)
    findings = []
    for (probe, _version, _key), platforms in sorted(by_case.items()):
        if len(platforms) < 2:
            continue
        reference = _reference_platform(platforms, cfg.reference)
        if reference is None:
            continue
        ref_results = platforms[reference]
        ref_errors = [r.error for r in ref_results]
        ref_mean = mean(ref_errors)
        for platform, group in sorted(platforms.items()):
            if platform == reference:
                continue
            errors = [r.error for r in group]
            ratio = mean(errors) / ref_mean if ref_mean > 0 else (float("inf") if mean(errors) > 0 else 1.0)
            larger, p = _larger(errors, ref_errors, cfg.alpha)
            if ratio < cfg.ratio or not larger:
                continue
            case = group[0].case
            name, ref_name = platform_name(*platform, labels), platform_name(*reference, labels)
            findings.append(StackFinding(
                kind="less_precise", probe=probe, case=case, chip_model=platform[0], stack=platform[1],
                reference_stack=reference[1], ratio=ratio, p_value=p,
                tolerance_row=group[0].error_stats.get("tolerance_row"),
                summary=(f"{case_label(probe, case)}: {name}'s mean error is {ratio:.3g}x {ref_name}'s "
                         f"({mean(errors):.3g} vs {ref_mean:.3g} relative, {len(errors)} vs {len(ref_errors)} results)"),
                chips=sorted({r.chip_id for r in group}), result_ids=[r.result_id for r in group][:100],
                distributions={name: _distribution(group), ref_name: _distribution(ref_results)},
            ))
    return findings


def _reference_platform(platforms: dict[tuple[str, str], list[PrecisionResult]], wanted: Optional[str]):
    if wanted:
        matching = [p for p in platforms if p[0] == wanted or p[1].startswith(wanted)]
        return matching[0] if matching else None
    return min(platforms, key=lambda p: (median(r.error for r in platforms[p]), p))


def _latest_per_chip(results: Iterable[PrecisionResult]) -> dict[tuple, dict[str, PrecisionResult]]:
    """Cohort (probe, version, case, seed, model, stack) -> chip -> its latest judged result."""
    cohorts: dict[tuple, dict[str, PrecisionResult]] = defaultdict(dict)
    for r in results:
        if r.status not in ("ok", "mismatch"):
            continue
        key = (r.probe, r.probe_version, r.case_key, r.seed, r.chip_model, r.stack_hash)
        seen = cohorts[key].get(r.chip_id)
        if seen is None or r.observed_at >= seen.observed_at:
            cohorts[key][r.chip_id] = r
    return cohorts


def find_bound_broken_by_stack(results: Iterable[PrecisionResult], labels: dict[str, str] | None = None) -> list[StackFinding]:
    """Cohorts of two or more chips that all break the fp64 bound with one digest."""
    findings = []
    for (probe, _v, _k, seed, model, stack), chips in sorted(_latest_per_chip(results).items()):
        group = list(chips.values())
        digests = {r.digest for r in group}
        if len(group) < 2 or len(digests) != 1 or None in digests:
            continue
        if not all(r.status == "mismatch" and r.distinct <= 1 for r in group):
            continue
        case = group[0].case
        findings.append(StackFinding(
            kind="bound_broken_by_stack", probe=probe, case=case, chip_model=model, stack=stack,
            tolerance_row=group[0].error_stats.get("tolerance_row"),
            summary=(f"{case_label(probe, case)} (seed {seed}): all {len(group)} chips of {platform_name(model, stack, labels or {})} "
                     "break the fp64 bound with the same output: a finding about the stack (kernel or library), not a chip"),
            chips=sorted(chips), result_ids=[r.result_id for r in group],
            distributions={platform_name(model, stack, labels or {}): _distribution(group)},
        ))
    return findings


def find_software_changed(results: Iterable[PrecisionResult], labels: dict[str, str] | None = None) -> list[StackFinding]:
    """A case whose unanimous digest changed between stacks on the same chips (an upgrade)."""
    labels = labels or {}
    by_case: dict[tuple, dict[str, dict[str, PrecisionResult]]] = defaultdict(dict)
    for (probe, v, key, seed, model, stack), chips in _latest_per_chip(results).items():
        by_case[(probe, v, key, seed, model)][stack] = chips
    findings = []
    for (probe, _v, _key, seed, model), stacks in sorted(by_case.items()):
        unanimous = {s: next(iter({r.digest for r in c.values()})) for s, c in stacks.items()
                     if len({r.digest for r in c.values()}) == 1 and None not in {r.digest for r in c.values()}}
        ordered = sorted(unanimous, key=lambda s: min(r.observed_at for r in stacks[s].values()))
        for old, new in zip(ordered, ordered[1:]):
            moved = sorted(set(stacks[old]) & set(stacks[new]))
            if not moved or unanimous[old] == unanimous[new]:
                continue
            case = next(iter(stacks[new].values())).case
            findings.append(StackFinding(
                kind="software_changed", probe=probe, case=case, chip_model=model, stack=new, reference_stack=old,
                summary=(f"{case_label(probe, case)} (seed {seed}): software changed the result — every chip of "
                         f"{platform_name(model, new, labels)} ({len(stacks[new])}) gives a new digest where "
                         f"{labels.get(old, old[:12])} agreed; {len(moved)} chip(s) moved between the stacks; not a hardware fault"),
                chips=sorted(stacks[new]), result_ids=[r.result_id for r in stacks[new].values()],
            ))
    return findings


def stack_findings(results: Sequence[PrecisionResult], cfg: PrecisionConfig = PrecisionConfig(),
                   labels: dict[str, str] | None = None) -> list[StackFinding]:
    """Every stack-level finding over the results, bound breaks first."""
    return (find_bound_broken_by_stack(results, labels) + find_software_changed(results, labels)
            + find_less_precise(results, cfg, labels))


def stack_bound_breaks(ev: Evidence) -> np.ndarray:
    """Per result: in a cohort of two or more chips that all break the bound with one digest."""
    rows = np.flatnonzero(ev.evidence_mask())
    marked = np.zeros(ev.n_results, dtype=bool)
    if rows.size == 0:
        return marked
    cohort, chip, digest = ev.cohort[rows], ev.chip[rows], ev.digest[rows]
    broken = (ev.status[rows] == MISMATCH) & (ev.distinct[rows] <= 1) & (digest != NO_DIGEST)
    for c in np.unique(cohort):
        inside = cohort == c
        chips = np.unique(chip[inside])
        if chips.size >= 2 and broken[inside].all() and np.unique(digest[inside]).size == 1:
            marked[rows[inside]] = True
    return marked


def without_stack_bound_breaks(ev: Evidence) -> Evidence:
    """The ledger's hook: results of stack-level bound breaks count as agreeing, not as wrong chips.

    They stay in the evidence (for slow and for counts); only their mismatch no longer blames
    a chip. The stack finding itself comes from ``stack_findings`` (``sdc precision``, report).
    """
    marked = stack_bound_breaks(ev)
    if not marked.any():
        return ev
    status = ev.status.copy()
    status[marked] = OK_CODE
    return replace(ev, status=status)


def load_precision_results(engine, since=None) -> tuple[list[PrecisionResult], dict[str, str]]:
    """Judged results of complete sweeps, with each stack hash's readable label."""
    from sqlalchemy import select

    from sdc.store.models import ChipRow, ProbeResultRow, SweepRow

    with engine.connect() as connection:
        chips = {c.chip_id: c for c in connection.execute(select(ChipRow.chip_id, ChipRow.model, ChipRow.stack, ChipRow.stack_hash))}
        query = (
            select(ProbeResultRow.result_id, ProbeResultRow.chip_id, ProbeResultRow.stack_hash, ProbeResultRow.probe,
                   ProbeResultRow.probe_version, ProbeResultRow.case, ProbeResultRow.seed, ProbeResultRow.status,
                   ProbeResultRow.digest, ProbeResultRow.distinct_repeat_digests, ProbeResultRow.max_rel_err,
                   ProbeResultRow.telemetry, ProbeResultRow.observed_at)
            .join(SweepRow, SweepRow.sweep_id == ProbeResultRow.sweep_id)
            .where(SweepRow.status == "complete", ProbeResultRow.status.in_(("ok", "mismatch")))
        )
        if since is not None:
            query = query.where(ProbeResultRow.observed_at >= since)
        rows = connection.execute(query).all()
    labels = {c.stack_hash: f"{_stack_label(c.stack)} [{c.stack_hash[:8]}]" for c in chips.values()}
    results = [
        PrecisionResult(
            result_id=r.result_id, chip_id=r.chip_id, chip_model=chips[r.chip_id].model if r.chip_id in chips else "",
            stack_hash=r.stack_hash, probe=r.probe, probe_version=r.probe_version, case=r.case, seed=int(r.seed),
            status=r.status, digest=r.digest, distinct=r.distinct_repeat_digests, max_rel_err=r.max_rel_err,
            error_stats=dict((r.telemetry or {}).get("error_stats") or {}), observed_at=r.observed_at.timestamp(),
        )
        for r in rows
    ]
    return results, labels


def _stack_label(stack: dict[str, Any]) -> str:
    parts = [f"{k} {stack[k]}" for k in ("torch", "runtime", "driver", "blas") if stack.get(k)]
    return ", ".join(parts)[:120] or "unknown stack"
