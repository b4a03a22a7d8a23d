"""The per-chip worker process: runs a chip's probe cases and reports each one to the sweep.

The sweep starts one worker per chip (from a fork server that has already imported torch,
so a start costs milliseconds) and watches it. A kernel that hangs cannot be interrupted
from a thread — not on the CPU, not on a GPU — so the watchdog is the parent killing the
process: the hung case becomes ``timeout`` and a fresh worker carries on with the rest.
The worker reports ``("start", i)`` before and ``("done", i, outcome)`` after each case.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from probes.base import Case, Outcome, Probe, Unsupported
from sdc.faults import Fault, FaultInjector
from sdc.node.devices import ChipHandle

log = logging.getLogger(__name__)

# cuBLAS reads this when it first starts, so it must be in the environment before any CUDA
# call: the fork server imports this module, and every worker inherits it.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


# A virtual CPU chip is one core: chips run one after another anyway, and on a shared
# machine two OpenMP threads waiting on each other made many small kernels 5-10x slower.
# Every CPU chip uses the same count, so digests stay comparable across them.
CPU_CHIP_THREADS = 1


@dataclass(frozen=True)
class WorkItem:
    """One case to run: its position in the chip's plan, the probe's name and the case."""

    index: int
    probe: str
    case: Case


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker needs; pickled to the worker process."""

    handle: ChipHandle
    items: Sequence[WorkItem]
    seed: int
    repeats: int
    faults: Sequence[Fault] = ()
    reference_cache: str | None = None
    parent_pid: int = 0
    probe_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    group: Sequence[ChipHandle] = ()  # the chips of a collective group (rank order), else empty


def run_case(probe: Probe, case: Case, handle: ChipHandle, seed: int, repeats: int, faults=None) -> Outcome:
    """Run one case; an exception becomes an ``error`` or ``skipped`` outcome, never a mismatch."""
    return _guarded(lambda: probe.run(case, handle.device, seed, repeats, faults))


def _guarded(call):
    try:
        return call()
    except Unsupported as exc:
        return Outcome(status="skipped", message=f"not supported here: {_first_line(exc)}")
    except NotImplementedError as exc:
        return Outcome(status="skipped", message=f"not supported here: {_first_line(exc)}")
    except torch.OutOfMemoryError as exc:
        return Outcome(status="error", message=f"out of memory: {_first_line(exc)}")
    except RuntimeError as exc:
        text = _first_line(exc)
        # "addmm_impl_cpu_" not implemented for 'Half': a dtype the backend lacks.
        if "not implemented for" in text or "not supported" in text.lower():
            return Outcome(status="skipped", message=f"not supported here: {text}")
        if "out of memory" in text.lower():
            return Outcome(status="error", message=f"out of memory: {text}")
        return Outcome(status="error", message=f"RuntimeError: {text}")
    except Exception as exc:
        return Outcome(status="error", message=f"{type(exc).__name__}: {_first_line(exc)}")


def run_group_case(probe: Probe, case: Case, group: Sequence[ChipHandle], seed: int, repeats: int, faults: Sequence[Fault]):
    """Run a collective case on a group of chips: one Outcome per rank, or one for all on an error."""
    injectors = [FaultInjector(h.name, faults) or None for h in group]
    return _guarded(lambda: probe.run_group(case, [h.device for h in group], seed, repeats, injectors))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def prepare_process(reference_cache: str | None = None) -> None:
    """Deterministic settings and the reference cache; once per process that runs probes."""
    from probes.harness import set_deterministic
    from probes.reference import set_cache_dir
    from sdc.digest import allow_compile

    set_deterministic()
    set_cache_dir(reference_cache)
    allow_compile()  # a sweep worker may spend a compile on its first large digest; training never does


def configure(probes: dict[str, Probe], settings: dict[str, dict[str, Any]]) -> None:
    """Apply per-probe settings (e.g. the burn duration) to freshly loaded probes."""
    for name, values in settings.items():
        probe = probes.get(name)
        for key, value in values.items():
            if probe is not None and hasattr(probe, key):
                setattr(probe, key, value)


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker when the sweep process is gone (e.g. SIGKILLed), even mid-kernel."""

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(3)
            except PermissionError:
                pass

    if parent_pid:
        threading.Thread(target=watch, name="sdc-parent-watch", daemon=True).start()


def worker_main(job: WorkerJob, conn) -> None:
    """Entry point of the worker process."""
    from probes.registry import all_probes
    from sdc.node.telemetry import telemetry_for

    # The sweep process owns the worker's life: SIGTERM to the whole process group (systemd's
    # default, `timeout`, Ctrl-C) must let the running case finish; the parent then stops us
    # with SIGKILL, and _exit_with_parent covers a parent that died.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(job.parent_pid)
    prepare_process(job.reference_cache)
    if job.handle.device.type == "cpu":
        torch.set_num_threads(CPU_CHIP_THREADS)
    probes = all_probes()
    configure(probes, job.probe_settings)
    injector = FaultInjector(job.handle.name, job.faults)
    telemetry = telemetry_for(job.handle)
    group_telemetry = [telemetry_for(h) for h in job.group]
    try:
        for item in job.items:
            conn.send(("start", item.index))
            probe = probes.get(item.probe)
            if probe is None:
                outcome = Outcome(status="error", message=f"probe '{item.probe}' is not installed in the worker")
            elif job.group:
                outcome = run_group_case(probe, item.case, job.group, job.seed, job.repeats, job.faults)
            else:
                telemetry.begin()
                outcome = run_case(probe, item.case, job.handle, job.seed, job.repeats, injector or None)
            if isinstance(outcome, list):  # a collective group: each rank's own chip's telemetry
                for each, member in zip(outcome, group_telemetry):
                    each.telemetry.update(member.sample())
            else:
                outcome.telemetry.update(telemetry.sample())
            conn.send(("done", item.index, outcome))
        conn.send(("finished",))
    except (BrokenPipeError, EOFError):
        pass  # the sweep went away; nothing left to report to
    finally:
        conn.close()


_context = None


def process_context():
    """A fork server that has imported torch and the probes: workers start in milliseconds.

    Forking the sweep process itself is unsafe once it has run torch (OpenMP and CUDA do
    not survive a fork); the fork server never runs a kernel. Spawn where there is none.
    """
    global _context
    if _context is None:
        methods = multiprocessing.get_all_start_methods()
        if "forkserver" in methods:
            _context = multiprocessing.get_context("forkserver")
            _context.set_forkserver_preload(["torch", "probes.registry", "sdc.sweep.worker"])
        else:  # pragma: no cover - Windows
            _context = multiprocessing.get_context("spawn")
    return _context
