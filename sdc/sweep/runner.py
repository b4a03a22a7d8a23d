"""Run a probe suite on a set of chips and turn what happens into records (no database here).

Records leave through ``sink`` as they are produced — the chips and a ``running`` sweep first,
then each chip's results as that chip finishes, the final sweep status last — so a sweep killed
half-way keeps what it had recorded and is later marked ``incomplete`` instead of counting as
evidence.

Each chip's cases run in its own worker process (``sdc.sweep.worker``) under a watchdog: a case
that outlives its time limit is killed with its worker and recorded as ``timeout``, and a new
worker goes on with the chip's remaining cases. Accelerators run in parallel, one worker each;
virtual CPU chips share the CPU and run one after another so their timings stay comparable.

Probes that span several chips (``group = True``: the collectives) run after every chip's own
cases, in a collective phase of their own: once per group of chips of one device type, every
rank's outcome recorded against its own chip with all participants listed; a chip with no
partner gets ``skipped`` results saying collectives were not covered (``SweepSummary.collectives``).

A case judged ``mismatch`` whose repeats agreed (a wrong answer, not an inconsistent one) is
run again once, at the end of the chip's cases, in a fresh worker process (as OpenDCDiag's
retest-on-failure does): a healthy chip can diverge once (a library's fallback kernel under
memory pressure), a broken one gives the same wrong answer again. The retest is a result of
its own whose telemetry names the original (``retest_of``); the analysis treats a reproduced
wrong answer as critical and a non-reproduced one as intermittent evidence.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from multiprocessing.connection import wait
from typing import Callable, Optional, Protocol, Sequence

import torch

import sdc
from probes.base import Case, Outcome, Probe
from sdc.exitcodes import ExitCode
from sdc.faults import FaultInjector
from sdc.node.devices import ChipHandle, hostname
from sdc.records import ProbeResult, Record, Sweep, canonical_json, new_id, utcnow
from sdc.sweep.plan import SweepOptions, chip_plan, plan, probation_first
from sdc.sweep.worker import (
    CPU_CHIP_THREADS,
    WorkerJob,
    WorkItem,
    configure,
    prepare_process,
    process_context,
    run_case,
    run_group_case,
    worker_main,
)

__all__ = [
    "ChipSummary", "StopFlag", "SweepSummary", "SweepOptions", "plan", "probation_first", "run_case", "run_sweep", "to_result",
]

Sink = Callable[[list[Record]], None]
# Set to stop a sweep between cases (a threading.Event, or anything with is_set()).
class StopFlag(Protocol):
    def is_set(self) -> bool: ...


# Called with outcome None when a case starts and with its outcome when it ends.
Progress = Callable[[ChipHandle, str, Case, Optional[Outcome]], None]

STARTUP_TIMEOUT_S = 300.0  # a worker that cannot even import torch in this long is stuck
MAX_RETESTS = 4  # per chip and sweep: a chip wrong everywhere must not double the sweep


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
    collectives: str = ""  # which chips the collective phase covered, or why it covered none

    @property
    def exit_code(self) -> ExitCode:
        codes = [c.exit_code for c in self.chips]
        if ExitCode.FAULT in codes:
            return ExitCode.FAULT
        if ExitCode.UNKNOWN in codes or self.sweep.status != "complete":
            return ExitCode.UNKNOWN
        return ExitCode.HEALTHY


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


class _ChipRun:
    """One chip's cases and what became of them; drives its worker process when isolated."""

    def __init__(self, handle: ChipHandle, work: list[tuple[Probe, Case]], options: SweepOptions, group: Sequence[ChipHandle] = ()):
        self.handle = handle
        self.group = tuple(group)  # a collective group's chips in rank order (handle is rank 0)
        self.work = list(work)
        self.options = options
        self.outcomes: dict[int, Outcome] = {}
        self.process = None
        self.conn = None
        self.current: Optional[int] = None
        self.deadline = 0.0
        self.heard_from = False  # whether the current worker has reported anything yet
        self.retest_of: dict[int, int] = {}  # work index of a retest -> index of the case it retests

    def queue_retests(self) -> bool:
        """Queue a fresh run of each wrong answer (mismatch with agreeing repeats) not yet retested.

        Not for a collective group: its outcome is one per rank, and every rank was judged
        against the others already.
        """
        if self.group:
            return False
        done = set(self.retest_of.values())
        wanted = [
            i for i, o in sorted(self.outcomes.items())
            if i not in self.retest_of and i not in done and o.status == "mismatch" and o.distinct_repeat_digests <= 1
        ][: max(0, MAX_RETESTS - len(self.retest_of))]
        for i in wanted:
            self.retest_of[len(self.work)] = i
            self.work.append(self.work[i])
        return bool(wanted)

    def remaining(self) -> list[int]:
        return [i for i in range(len(self.work)) if i not in self.outcomes]

    def start_worker(self, stopped: Callable[[], bool] = lambda: False) -> bool:
        """Start a worker for the remaining cases; False when nothing remains or none starts."""
        todo = self.remaining()
        if not todo:
            return False
        context = process_context()
        parent_conn, child_conn = context.Pipe(duplex=False)
        job = WorkerJob(
            handle=self.handle,
            items=[WorkItem(i, self.work[i][0].name, self.work[i][1]) for i in todo],
            seed=self.options.seed,
            repeats=self.options.repeats,
            faults=list(self.options.faults),
            reference_cache=self.options.reference_cache,
            parent_pid=os.getpid(),
            probe_settings={k: dict(v) for k, v in self.options.probe_settings.items()},
            group=self.group,
        )
        process = context.Process(target=worker_main, args=(job, child_conn), daemon=True, name=f"sdc-{self.handle.name}")
        try:
            process.start()
        except (OSError, EOFError) as exc:  # e.g. the fork server was killed with our process group
            child_conn.close()
            parent_conn.close()
            if stopped():  # the stop signal took the fork server with it: the cases just do not run
                return False
            for index in todo:
                self.outcomes[index] = Outcome(status="error", message=f"could not start a worker process: {exc or type(exc).__name__}")
            return False
        self.process = process
        child_conn.close()
        self.conn = parent_conn
        self.current = None
        self.heard_from = False
        self.deadline = time.monotonic() + STARTUP_TIMEOUT_S
        return True

    def limit_s(self, index: int) -> float:
        probe, case = self.work[index]
        return max(self.options.case_timeout_s, probe.timeout_s(case) or 0.0)

    def stop_worker(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
        if self.process is not None:
            self.process.join(timeout=10)
        if self.conn is not None:
            self.conn.close()
        self.process = self.conn = None


def _as_retest(outcome: Outcome, original: Outcome, original_id: str | None) -> Outcome:
    """The retest's outcome, naming the result it retests and whether it reproduced it."""
    reproduced = outcome.status == "mismatch" and outcome.digest is not None and outcome.digest == original.digest
    verdict = "reproduced the wrong answer" if reproduced else f"did not reproduce it ({outcome.status})"
    note = f"retest in a fresh worker process: {verdict}"
    telemetry = dict(outcome.telemetry, retest_of=original_id, reproduced=reproduced)
    return replace(outcome, message=f"{note}; {outcome.message}" if outcome.message else note, telemetry=telemetry)


def _failure_text(probe: Probe, case: Case, outcome: Outcome) -> str:
    return f"{probe.name}/{case.name} {case.dtype}: {outcome.status} {outcome.message}".strip()


def run_sweep(
    chips: Sequence[ChipHandle],
    probes: Sequence[Probe],
    suite: str,
    sink: Sink,
    seed: int = 0,
    repeats: int = 3,
    progress: Progress | None = None,
    options: SweepOptions | None = None,
    stop: StopFlag | None = None,
) -> SweepSummary:
    """Run every case of ``suite`` on every chip, sending records to ``sink`` as they come.

    When ``stop`` is set (SIGTERM to the agent or to ``sdc sweep``) no further case starts,
    the cases already running finish and are recorded, and the sweep ends ``aborted``: what
    was measured is kept, but an aborted sweep is not counted as evidence.
    """
    stopped = stop.is_set if stop is not None else (lambda: False)
    if options is None:
        options = SweepOptions(seed=seed, repeats=repeats)
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
    configure({p.name: p for p in probes}, {k: dict(v) for k, v in options.probe_settings.items()})
    plans = {handle.name: chip_plan(probes, suite, handle, options) for handle in chips}
    runs = [_ChipRun(handle, [w for w in plans[handle.name] if not _is_group(w[0])], options) for handle in chips]
    summaries: dict[str, ChipSummary] = {}

    def finish(run: _ChipRun) -> None:
        summary = ChipSummary(run.handle.name, run.handle.chip.chip_id)
        results: list[Record] = []
        ids: dict[int, str] = {}
        for index, (probe, case) in enumerate(run.work):
            outcome = run.outcomes.get(index)
            if outcome is None:  # never ran: the sweep was stopped first
                continue
            original = run.retest_of.get(index)
            if original is not None:
                outcome = _as_retest(outcome, run.outcomes[original], ids.get(original))
                summary.failures.append(f"{probe.name}/{case.name} {case.dtype}: {outcome.message}")
            else:
                summary.statuses[outcome.status] += 1
                if outcome.status in ("mismatch", "error", "timeout"):
                    summary.failures.append(_failure_text(probe, case, outcome))
            result = to_result(sweep.sweep_id, run.handle, probe, case, options.seed, outcome)
            ids[index] = result.result_id
            results.append(result)
        sink(results)
        summaries[run.handle.name] = summary

    if options.isolate:
        parallel = options.parallel if options.parallel is not None else all(h.device.type != "cpu" for h in chips)
        _run_isolated(runs, parallel, progress, finish, stopped)
    else:
        _run_in_process(runs, progress, finish, stopped)
    for run in runs:
        if run.handle.name not in summaries:  # stopped before this chip's turn
            finish(run)
    collectives = ""
    if not stopped():
        collectives = _collective_phase(chips, plans, options, progress, stopped, sink, sweep.sweep_id, summaries)
    if stopped():
        not_run = sum(len(run.remaining()) for run in runs)
        final = replace(
            sweep, status="aborted", finished_at=utcnow(),
            message=f"stopped by request: running cases finished, {not_run} case(s) not run",
        )
    else:
        final = replace(sweep, status="complete", finished_at=utcnow())
    sink([final])
    return SweepSummary(final, [summaries[h.name] for h in chips], collectives)


# --------------------------------------------------------------------------------------
# The collective phase: after every chip's own cases, so no chip's worker runs beside it.


def _is_group(probe: Probe) -> bool:
    return bool(getattr(probe, "group", False))


def collective_groups(chips: Sequence[ChipHandle]) -> tuple[list[list[ChipHandle]], list[ChipHandle]]:
    """(groups of two or more chips of one device type, chips left alone), in the sweep's order."""
    by_type: dict[str, list[ChipHandle]] = {}
    for handle in chips:
        by_type.setdefault(handle.device.type, []).append(handle)
    groups = [members for members in by_type.values() if len(members) >= 2]
    alone = [members[0] for members in by_type.values() if len(members) == 1]
    return groups, alone


def _collective_phase(
    chips: Sequence[ChipHandle],
    plans: dict[str, list[tuple[Probe, Case]]],
    options: SweepOptions,
    progress: Progress | None,
    stopped: Callable[[], bool],
    sink: Sink,
    sweep_id: str,
    summaries: dict[str, ChipSummary],
) -> str:
    """Run each group's collective cases once, record a result per participating chip; say what was covered."""
    planned = {h.name: [(p, c) for p, c in plans[h.name] if _is_group(p)] for h in chips}
    if not any(planned.values()):
        return ""
    groups, alone = collective_groups(chips)
    notes: list[str] = []
    for handle in alone:
        # Never a silent pass: the chip gets a skipped result per collective case, and the sweep says so.
        count = sum(1 for h in chips if h.device.type == handle.device.type)
        reason = f"collectives not covered: this sweep has {count} {handle.device.type} device(s); a collective needs 2 or more"
        outcomes = {i: Outcome(status="skipped", message=reason) for i in range(len(planned[handle.name]))}
        _record_group([handle], planned[handle.name], outcomes, options, sink, sweep_id, summaries)
        notes.append(f"{handle.name}: {reason}")
    group_runs = []
    for members in groups:
        # Cases every member planned (a budget may have cut some), with the group's size in the cohort key.
        keys = [{(p.name, canonical_json(c.to_dict())) for p, c in planned[h.name]} for h in members]
        work = [
            (p, Case(c.name, c.shape, c.dtype, {**c.params, "world": len(members)}))
            for p, c in planned[members[0].name]
            if all((p.name, canonical_json(c.to_dict())) in k for k in keys)
        ]
        if work:
            group_runs.append(_ChipRun(members[0], work, options, group=members))
            notes.append(f"collectives over {', '.join(h.name for h in members)}")
    if options.isolate:
        _run_isolated(group_runs, False, progress, lambda run: None, stopped)
    else:
        prepare_process(options.reference_cache)
        for run in group_runs:
            for index, (probe, case) in enumerate(run.work):
                if stopped():
                    break
                run.outcomes[index] = run_group_case(probe, case, run.group, options.seed, options.repeats, options.faults)
    for run in group_runs:
        _record_group(list(run.group), run.work, run.outcomes, options, sink, sweep_id, summaries)
    return "; ".join(notes)


def _record_group(members, work, outcomes, options, sink, sweep_id, summaries) -> None:
    """One result per member per case: its own rank's outcome, or the group's error for all."""
    results: list[Record] = []
    participants = [h.chip.chip_id for h in members]
    for index, (probe, case) in enumerate(work):
        outcome = outcomes.get(index)
        if outcome is None:  # never ran: the sweep was stopped first
            continue
        for rank, handle in enumerate(members):
            mine = outcome[rank] if isinstance(outcome, list) else replace(outcome, telemetry=dict(outcome.telemetry))
            mine.telemetry["participants"] = participants
            summary = summaries[handle.name]
            summary.statuses[mine.status] += 1
            if mine.status in ("mismatch", "error", "timeout"):
                summary.failures.append(_failure_text(probe, case, mine))
            results.append(to_result(sweep_id, handle, probe, case, options.seed, mine))
    if results:
        sink(results)


def _run_in_process(
    runs: list[_ChipRun], progress: Progress | None, finish: Callable[[_ChipRun], None], stopped: Callable[[], bool]
) -> None:
    if runs:
        prepare_process(runs[0].options.reference_cache)
    threads = torch.get_num_threads()
    try:
        for run in runs:
            if stopped():
                return
            torch.set_num_threads(CPU_CHIP_THREADS if run.handle.device.type == "cpu" else threads)
            _run_chip_in_process(run, progress, stopped)
            finish(run)
    finally:
        torch.set_num_threads(threads)


def _run_chip_in_process(run: _ChipRun, progress: Progress | None, stopped: Callable[[], bool]) -> None:
    """Without isolation the retests run in this same process (no fresh worker to be had)."""
    injector = FaultInjector(run.handle.name, run.options.faults)
    index = 0
    while index < len(run.work) or (not stopped() and run.queue_retests()):
        probe, case = run.work[index]
        index += 1
        if stopped():
            return
        if progress:
            progress(run.handle, probe.name, case, None)
        outcome = run_case(probe, case, run.handle, run.options.seed, run.options.repeats, injector or None)
        run.outcomes[index - 1] = outcome
        if progress:
            progress(run.handle, probe.name, case, outcome)


def _run_isolated(
    runs: list[_ChipRun],
    parallel: bool,
    progress: Progress | None,
    finish: Callable[[_ChipRun], None],
    stopped: Callable[[], bool],
) -> None:
    """Drive the chips' workers: at most one at a time unless ``parallel``; kill hung ones."""
    waiting = deque(runs)
    active: list[_ChipRun] = []

    def record(run: _ChipRun, index: int, outcome: Outcome) -> None:
        run.outcomes[index] = outcome
        if progress:
            probe, case = run.work[index]
            progress(run.handle, probe.name, case, outcome)

    def close(run: _ChipRun) -> None:
        run.stop_worker()
        active.remove(run)
        finish(run)

    def restart_or_close(run: _ChipRun) -> None:
        run.stop_worker()
        if not stopped() and not run.remaining():
            run.queue_retests()  # they run in the fresh worker started next
        if stopped() or not run.start_worker(stopped):
            active.remove(run)
            finish(run)

    try:
        while (waiting and not stopped()) or active:
            while waiting and (parallel or not active) and not stopped():
                run = waiting.popleft()
                active.append(run)
                if not run.start_worker(stopped):
                    close(run)
            if not active:
                continue
            now = time.monotonic()
            timeout = max(0.0, min(run.deadline for run in active) - now)
            ready = wait([run.conn for run in active], timeout=timeout)
            for run in [r for r in active if r.conn in ready]:
                try:
                    message = run.conn.recv()
                except (EOFError, OSError):
                    code = run.process.exitcode if run.process is not None else None
                    if run.current is not None:
                        record(run, run.current, Outcome(status="error", message=f"worker process died (exit code {code})"))
                    elif not run.heard_from:
                        # Died before its first case: do not loop restarting a broken worker.
                        for index in run.remaining():
                            record(run, index, Outcome(status="error", message=f"worker process failed to start (exit code {code})"))
                    restart_or_close(run)
                    continue
                run.heard_from = True
                if message[0] == "start":
                    run.current = message[1]
                    if progress:
                        probe, case = run.work[run.current]
                        progress(run.handle, probe.name, case, None)
                    run.deadline = time.monotonic() + run.limit_s(run.current)
                elif message[0] == "done":
                    record(run, message[1], message[2])
                    run.current = None
                    run.deadline = time.monotonic() + STARTUP_TIMEOUT_S
                    if stopped():  # the running case finished; start no other
                        close(run)
                elif message[0] == "finished":
                    restart_or_close(run)  # a fresh worker for the retests, if any; else done
            now = time.monotonic()
            for run in [r for r in active if r.deadline <= now]:
                if run.current is not None:
                    limit = run.limit_s(run.current)
                    record(run, run.current, Outcome(status="timeout", message=f"no result within {limit:.0f} s; worker killed"))
                else:
                    for index in run.remaining():
                        record(run, index, Outcome(status="error", message="worker process did not start in time"))
                restart_or_close(run)
    finally:
        for run in active:
            run.stop_worker()
