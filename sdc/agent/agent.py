"""``sdc agent``: run sweeps, analyses and reports on crontab schedules (APScheduler 3).

Jobs come from the ``[agent]`` table of the config file and from flags. Every job has cron's
meaning (see ``sdc.agent.cron``), an optional random jitter, ``coalesce=True`` (after downtime, one
run instead of a burst), ``max_instances=1`` and a misfire grace time.

Restarts: the agent keeps the time each job last ran in ``<data dir>/agent-state.json``. On
start, a job whose schedule fired while the agent was down is scheduled at its first missed
fire time; APScheduler then coalesces all the missed runs into one, and runs it only if the
latest missed time is within ``misfire_grace_time`` (else it waits for the next fire time).

Busy chips: before a sweep the agent asks ``sdc.node.busy``; if busy, the sweep is deferred, the
deferral is stored as a ``Sweep`` record with status ``aborted`` and a message starting
``deferred:`` (never analysed, visible to ``sdc export`` and reports), and retried after
``defer_retry`` seconds, at most ``max_defers`` times per scheduled run.

SIGTERM (or SIGINT): no new job starts; a running sweep finishes the probe it is running,
stores its sweep as ``aborted`` with a message saying so, and the agent exits 0.
(Results of the chip being probed at that moment are not stored: run_sweep hands results
over a chip at a time, and an aborted sweep is not evidence anyway.)
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from sdc.agent import cron
from sdc.agent.config import AgentConfig
from sdc.agent.state import first_missed_run, load_state, save_state
from sdc.config import Settings, safe_url
from sdc.files import atomic_write
from sdc.node.busy import busy_reason
from sdc.records import Sweep, new_id, utcnow

log = logging.getLogger("sdc.agent")


class Agent:
    """Holds the scheduler, the jobs and the stop flag; ``run()`` blocks until stopped."""

    def __init__(
        self,
        settings: Settings,
        config: AgentConfig,
        scheduler_factory: Callable[..., Any] | None = None,
        busy: Callable[[], str | None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.settings = settings
        self.config = config
        self.stop = threading.Event()
        self.clock = clock
        self.busy = busy or (lambda: busy_reason(config.busy))
        self._state = load_state(config.state_file)
        self._state_lock = threading.Lock()
        self._running = 0
        self._idle = threading.Condition()
        self._defers = 0
        if scheduler_factory is None:
            from apscheduler.schedulers.blocking import BlockingScheduler

            scheduler_factory = BlockingScheduler
        self.scheduler = scheduler_factory(timezone=config.timezone or _local_zone())
        self.functions: dict[str, Callable[[], None]] = {"sweep": self.sweep, "analyze": self.analyze, "report": self.report}

    # -- scheduling -------------------------------------------------------------------
    def add_jobs(self) -> None:
        now = self.clock()
        for spec in self.config.jobs:
            trigger = cron.trigger(spec.schedule, jitter=spec.jitter, timezone=self.scheduler.timezone)
            options: dict[str, Any] = {}
            missed = first_missed_run(trigger, self._state.get(spec.name), now)
            if self.config.run_now:
                options["next_run_time"] = now
            elif missed is not None:
                log.info("%s: schedule fired while the agent was down (first missed %s); catching up once", spec.name, missed)
                options["next_run_time"] = missed
            self.scheduler.add_job(
                self._guarded(spec.name),
                trigger,
                id=spec.name,
                name=spec.name,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=self.config.misfire_grace_time,
                replace_existing=True,
                **options,
            )
            log.info("%s: '%s' (jitter %d s)", spec.name, spec.schedule, spec.jitter)

    def _guarded(self, name: str) -> Callable[[], None]:
        function = self.functions[name]

        def run() -> None:
            if self.stop.is_set():
                return
            with self._idle:
                self._running += 1
            started = self.clock()
            try:
                function()
                with self._state_lock:
                    self._state[name] = started
                    save_state(self.config.state_file, self._state)
            except Exception:  # a failed job is logged; the agent keeps its schedule
                log.exception("%s failed", name)
            finally:
                with self._idle:
                    self._running -= 1
                    self._idle.notify_all()

        run.__name__ = f"sdc_{name}"
        return run

    def run(self) -> int:
        """Install signal handlers, run until SIGTERM/SIGINT, wait for the running job; exit code."""
        self.add_jobs()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        log.info("agent started (pid %d); state in %s", os.getpid(), self.config.state_file)
        if not self.stop.is_set():  # a signal during start-up means: do not start at all
            self.scheduler.start()  # blocks until shutdown
        self.wait_idle()
        log.info("agent stopped")
        return 0

    def _on_signal(self, signum, _frame) -> None:
        log.info("%s: finishing the running probe, then stopping", signal.Signals(signum).name)
        self.stop.set()
        # Not from inside the handler: the main thread may hold the scheduler's locks here.
        threading.Thread(target=self._shutdown, name="sdc-agent-stop", daemon=True).start()

    def _shutdown(self) -> None:
        try:
            self.scheduler.shutdown(wait=False)
        except Exception:  # already stopped
            pass

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._running == 0, timeout)

    # -- jobs -------------------------------------------------------------------------
    def _store(self):
        from sdc.store import Store

        return Store(self.settings.database_url, self.settings.outbox_dir)

    def sweep(self) -> None:
        cfg = self.config
        store = self._store()
        try:
            reason = self.busy() if cfg.busy_check else None
            if reason:
                self._defer(store, reason)
                return
            self._defers = 0
            self._sweep(store)
        finally:
            store.dispose()

    def _defer(self, store, reason: str) -> None:
        import sdc
        from sdc.handoffs.state import this_host

        now = utcnow()
        retry = self._defers < self.config.max_defers
        note = f"; retry in {self.config.defer_retry} s" if retry else "; no retry left, waiting for the next scheduled run"
        record = Sweep(
            sweep_id=new_id(), host=this_host(), suite=self.config.suite, started_at=now, status="aborted",
            sdc_version=sdc.__version__, finished_at=now, pid=os.getpid(), message=f"deferred: {reason}{note}",
        )
        store.deliver([record])
        log.warning("sweep deferred: %s%s", reason, note)
        if retry:
            self._defers += 1
            self.scheduler.add_job(
                self._guarded("sweep"), "date", run_date=now + timedelta(seconds=self.config.defer_retry),
                id="sweep-retry", name="sweep-retry", replace_existing=True, misfire_grace_time=self.config.misfire_grace_time,
            )
        else:
            self._defers = 0

    def _sweep(self, store) -> None:
        from probes.registry import all_probes
        from sdc.node.backends import requested_modules
        from sdc.sweep.node_sweep import NodeSweepOptions, node_sweep

        cfg = self.config
        modules, source = requested_modules(config=self.settings.tables)  # SDC_BACKEND_MODULES or backend_modules
        options = NodeSweepOptions(
            suite=cfg.suite, devices=cfg.devices, seed=cfg.seed, repeats=cfg.repeats,
            case_timeout_s=cfg.case_timeout_s, budget_s=cfg.budget_s, burn_duration_s=cfg.burn_duration_s,
            data_dir=self.settings.data_dir, catalog=cfg.catalog, backend_modules=tuple(modules), backend_source=source,
        )
        def on_start(chips) -> None:
            log.info("sweep starting: suite %s on %s", cfg.suite, ", ".join(h.name for h in chips))

        def progress(handle, probe_name, case, outcome) -> None:
            if outcome is None:
                log.info("sweep: %s/%s %s on %s", probe_name, case.name, case.dtype, handle.name)

        # On SIGTERM the stop flag is set: the running probe finishes, its result is stored,
        # and run_sweep ends the sweep 'aborted' (kept, but not counted as evidence).
        result = node_sweep(store, options, list(all_probes().values()), progress=progress, stop=self.stop, on_start=on_start)
        summary = result.summary
        if result.unreachable:
            log.warning("database unreachable (%s); the sweep's records were kept in the outbox %s", result.unreachable, result.outbox)
        if result.abandoned:
            log.warning("marked %d earlier sweep(s) on this host incomplete (their process had died)", len(result.abandoned))
        if summary.sweep.status == "aborted":
            log.info("sweep %s aborted: %s", summary.sweep.sweep_id[:12], summary.sweep.message)
            return
        log.info("sweep %s %s, exit code %d", summary.sweep.sweep_id[:12], summary.sweep.status, int(summary.exit_code))

    def analyze(self) -> None:
        try:
            from sdc.quarantine.pipeline import analyze_store
        except ImportError as exc:
            log.error("analyze: this sdc has no analysis pipeline (%s); nothing was analysed", exc)
            return
        from sdc.store.lock import AnalysisBusy

        store = self._store()
        try:
            result = analyze_store(store, self.settings, dry_run=self.config.analyze_dry_run)
        except AnalysisBusy as exc:  # another node's analysis holds the store: it covers this run
            log.warning("analyze: %s", exc)
            return
        finally:
            store.dispose()
        log.info(
            "analyze: %d verdict(s), %d transition(s)%s, exit code %d",
            len(result.verdicts), len(result.transitions), ", circuit breaker tripped" if result.breaker_tripped else "",
            int(result.exit_code),
        )

    def report(self) -> None:
        from sdc.reports import build_report, render

        store = self._store()
        try:
            text = render(build_report(store.engine(), source=safe_url(store.url)), self.config.report_format)
        finally:
            store.dispose()
        path = self.config.report_path
        atomic_write(path, text)
        log.info("report written to %s", path)


def _local_zone():
    # Cron runs in local time; so do we, unless [agent] timezone says otherwise.
    try:
        from tzlocal import get_localzone

        return get_localzone()
    except Exception:
        return timezone.utc
