"""Run a probe suite on a set of chips and turn what happens into records (no database here).

Records leave through ``sink`` as they are produced — the chips and a ``running`` sweep first,
then each chip's results, the final sweep status last — so a sweep killed half-way keeps what
it had recorded and is later marked ``incomplete`` instead of counting as evidence.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

import torch

import sdc
from probes.base import Case, Outcome, Probe
from sdc.devices import ChipHandle, hostname
from sdc.exitcodes import ExitCode
from sdc.records import ProbeResult, Record, Sweep, new_id, utcnow

Sink = Callable[[list[Record]], None]
Progress = Callable[[ChipHandle, Probe, Case], None]


@dataclass
class ChipSummary:
    name: str
    chip_id: str
    statuses: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> ExitCode:
        if self.statuses["mismatch"]:
            return ExitCode.FAULT
        if self.statuses["error"] or self.statuses["timeout"]:
            return ExitCode.UNKNOWN
        return ExitCode.HEALTHY


@dataclass
class SweepSummary:
    sweep: Sweep
    chips: list[ChipSummary]

    @property
    def exit_code(self) -> ExitCode:
        codes = [c.exit_code for c in self.chips]
        if ExitCode.FAULT in codes:
            return ExitCode.FAULT
        if ExitCode.UNKNOWN in codes:
            return ExitCode.UNKNOWN
        return ExitCode.HEALTHY


def plan(probes: Iterable[Probe], suite: str) -> list[tuple[Probe, Case]]:
    return [(probe, case) for probe in probes for case in probe.cases(suite)]


def run_case(probe: Probe, case: Case, handle: ChipHandle, seed: int, repeats: int, faults=None) -> Outcome:
    """Run one case; an exception becomes an ``error`` or ``skipped`` outcome, never a mismatch."""
    try:
        return probe.run(case, handle.device, seed, repeats, faults)
    except torch.OutOfMemoryError as exc:
        return Outcome(status="error", message=f"out of memory: {str(exc).splitlines()[0][:200]}")
    except (NotImplementedError, TypeError) as exc:
        return Outcome(status="skipped", message=f"not supported here: {str(exc).splitlines()[0][:200]}")
    except Exception as exc:
        return Outcome(status="error", message=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")


def to_result(sweep_id: str, handle: ChipHandle, probe: Probe, case: Case, seed: int, outcome: Outcome) -> ProbeResult:
    return ProbeResult(
        result_id=new_id(),
        sweep_id=sweep_id,
        chip_id=handle.chip.chip_id,
        probe=probe.name,
        probe_version=probe.version,
        case=case.to_dict(),
        seed=seed,
        status=outcome.status,
        stack_hash=handle.chip.stack_hash,
        repeats=outcome.repeats,
        distinct_repeat_digests=outcome.distinct_repeat_digests,
        timings=list(outcome.timings),
        observed_at=utcnow(),
        digest=outcome.digest,
        reference_digest=outcome.reference_digest,
        max_abs_err=outcome.max_abs_err,
        max_rel_err=outcome.max_rel_err,
        error_bound=outcome.error_bound,
        throughput=outcome.throughput,
        throughput_unit=outcome.throughput_unit,
        message=outcome.message,
        telemetry=dict(outcome.telemetry),
    )


def run_sweep(
    chips: Sequence[ChipHandle],
    probes: Sequence[Probe],
    suite: str,
    sink: Sink,
    seed: int = 0,
    repeats: int = 3,
    progress: Progress | None = None,
) -> SweepSummary:
    """Run every case of ``suite`` on every chip, sending records to ``sink`` as they come."""
    sweep = Sweep(
        sweep_id=new_id(),
        host=hostname(),
        suite=suite,
        started_at=utcnow(),
        status="running",
        sdc_version=sdc.__version__,
        pid=os.getpid(),
    )
    sink([handle.chip for handle in chips] + [sweep])
    work = plan(probes, suite)
    summaries = []
    for handle in chips:
        summary = ChipSummary(handle.name, handle.chip.chip_id)
        results: list[Record] = []
        for probe, case in work:
            if progress:
                progress(handle, probe, case)
            outcome = run_case(probe, case, handle, seed, repeats)
            summary.statuses[outcome.status] += 1
            if outcome.status in ("mismatch", "error", "timeout"):
                summary.failures.append(f"{probe.name}/{case.name} {case.dtype}: {outcome.status} {outcome.message}".strip())
            results.append(to_result(sweep.sweep_id, handle, probe, case, seed, outcome))
        sink(results)
        summaries.append(summary)
    final = replace(sweep, status="complete", finished_at=utcnow())
    sink([final])
    return SweepSummary(final, summaries)
