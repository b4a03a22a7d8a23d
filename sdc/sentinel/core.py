"""ReplicaSentinel: checks, on every data-parallel replica, that replicas which must hold or
compute the same bytes do, names the chip that disagrees, and replays steps to tell transient
faults from persistent ones — while the job runs.

Protocol per step (every rank runs the same collectives in the same order):

* ``on_grads_ready`` (``flags_every``): with DDP-reduced gradients, a probe of a sample of
  them, the same on every rank, and a gather of the flags only when it fires; with sharded
  gradients an asynchronous all-reduce(MAX) of two int64s started in ``on_loss`` (``flags.py``).
* ``on_grads_ready``, on check steps only (``schedule.py``: when, under one cost budget): one all-reduce(MAX) of a few int64s — the reduced
  gradients' digest and its complement (so MAX and MIN travel together), local flags, the
  local gradient norm, an error flag. Only if something is off: an all-gather of
  per-parameter digests and a majority vote, or a replay of the anomalous rank's step.
* ``on_step_end``: on a check step, an all-reduce(MAX) of one int64 agreeing on the next check
  steps (unless ``on_grads_ready`` did), the same comparison for parameters and optimizer
  state (``param_every``), then a recompute audit (``audit_every``, see ``audit.py``).

A local failure (an exception in the sentinel's own code) becomes the error flag, so every
rank skips the comparison together instead of one rank leaving a collective unmatched.
"""

from __future__ import annotations

import atexit
import logging
import weakref
from dataclasses import replace
from typing import Any, Callable, Sequence

import torch
from torch import nn

from sdc.digest import combine_sums, plan_buckets, squared_norm, tensor_sums, word_count
from sdc.node import devices
from sdc.records import JobEvent
from sdc.sentinel.audit import Auditor, warm_up_deterministic_mode
from sdc.sentinel.checks import FLAG_NONFINITE_GRAD, bits_float, flag_names, float_bits
from sdc.sentinel.comm import Collectives
from sdc.sentinel.config import EXIT_RERUN_ELSEWHERE, EXIT_VALIDATION_FAILED, SentinelConfig, due
from sdc.sentinel.events import EventSink, store_deliver
from sdc.sentinel.flags import FlagExchange, reduced_by_ddp
from sdc.sentinel.gemm_check import GemmChecks
from sdc.sentinel.identity import Peers, chip_id_for, default_job_id, model_device
from sdc.sentinel.losses import LossTracker, PendingLosses
from sdc.sentinel.repair import optimizer_tensors, resync, skip_update
from sdc.sentinel.replayer import Replayer, ReplayFn, RngCapture
from sdc.sentinel.reporting import Reporter
from sdc.sentinel.schedule import CheckSchedule, counted
from sdc.sentinel.state import StepState
from sdc.sentinel.tap import LocalGradTap
from sdc.sentinel.vote import Finding, StepVerdict, majority_vote, step_verdict

log = logging.getLogger(__name__)


class SentinelAbort(SystemExit):
    """Raised with action='raise': exit code 16 (rerun elsewhere to disambiguate) or 17 (validation failed)."""

    def __init__(self, code: int, verdict: StepVerdict):
        super().__init__(code)
        self.verdict = verdict


def _close_at_exit(ref: "weakref.ref[ReplicaSentinel]") -> None:
    sentinel = ref()
    if sentinel is not None:
        sentinel.close()


class ReplicaSentinel:
    """Cross-replica and local checks for one data-parallel replica (create it on every rank).

    Args:
        model: the module whose parameters and gradients are compared (a DDP wrapper is fine).
        optimizer: its optimizer, for ``resync`` and optimizer-state checks.
        group: the process group of replicas holding identical copies (default: world;
            for HSDP the replicate dimension).
        config: a SentinelConfig.
        replay_fn: ``replay_fn(batch) -> loss``, re-runs the forward pass without
            data-parallel hooks, computing exactly the step's loss; without it local
            anomalies are reported but not replayed, and no audits run.
        deliver: where JobEvents go (default: sdc's store, spooling to the outbox).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        group: Any = None,
        config: SentinelConfig | None = None,
        replay_fn: ReplayFn | None = None,
        deliver: Callable[[Sequence[JobEvent]], object] | None = None,
    ):
        self.config = config or SentinelConfig()
        self.model = model
        self.optimizer = optimizer
        self.comm = Collectives(group)
        seen: set[int] = set()
        self.names: list[str] = []
        params: list[torch.Tensor] = []
        for name, param in model.named_parameters():
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                self.names.append(name.removeprefix("module."))
                params.append(param)
        self._index_of = {id(p): i for i, p in enumerate(params)}
        self.buckets = plan_buckets(list(zip(self.names, params)), self.config.bucket_bytes)
        self._bucket_of = {name: b.index for b in self.buckets for name in b.names}
        self.job_id = self.config.job_id or default_job_id()
        self.host = devices.hostname()
        self.device = model_device(params)
        self.chip_id = self.config.chip_id or chip_id_for(self.device, self.comm.global_rank)
        # Who is who: gathered once so every rank can name any suspect's chip.
        self.peers = Peers(tuple(tuple(r) for r in self.comm.gather_objects((self.comm.global_rank, self.host, self.chip_id))))
        if deliver is None:
            deliver_fn, close, connect = store_deliver(self.config.database_url, self.config.outbox_dir)
            self.sink = EventSink(deliver_fn, close, connect=connect)
        else:
            self.sink = EventSink(deliver)
        self.reporter = Reporter(self.sink, job_id=self.job_id, rank=self.comm.global_rank, world_size=self.comm.size,
                                 host=self.host, chip_id=self.chip_id, action=self.config.action,
                                 record_ok=self.config.record_ok)
        self.rng = RngCapture(self.device)
        self.replayer = Replayer(self.comm, params, self.names, self.peers, replay_fn, buffers=list(model.buffers()))
        self.auditor = Auditor(self.comm, self.replayer, self.peers, self.config.audit_samples, model,
                               repeats=self.config.audit_repeats)
        c = self.config
        # Sampled GEMM checksums on rotating nn.Linear layers (gemm_check_every=0 turns them off).
        self.gemm_checks: GemmChecks | None = None
        if c.gemm_check_every:
            self.gemm_checks = GemmChecks(model, c.gemm_check_layers, timer=lambda: self.schedule.measure("gemm"))
        gemm_every = c.gemm_check_every if self.gemm_checks is not None and self.gemm_checks.linears else 0
        self.schedule = CheckSchedule({"local": c.local_every, "grads": c.grad_every, "params": c.param_every,
                                       "audit": c.audit_every, "gemm": gemm_every}, c.check_budget, c.max_check_period,
                                      self.device, max_seconds=c.max_check_seconds)
        if self.config.audit_every:
            warm_up_deterministic_mode()
        self.loss_tracker = LossTracker(self.config.loss_spike_factor, self.config.warmup_steps, self.config.loss_window)
        self.losses = PendingLosses(self.loss_tracker)
        # The gradients seen at on_grads_ready are every rank's all-reduce (DDP over this group,
        # or one replica): a NaN anywhere shows in all of them, and no per-step exchange is needed.
        self.flags = FlagExchange(self.comm, self.losses, self.comm.size == 1 or reduced_by_ddp(model, self.comm),
                                  self.reporter, self.peers.suspect(self.comm.index))
        self.last_verified_step: int | None = None
        self.step = -1
        self.errors = 0
        self.closed = False
        # Set by adapters (attach_ddp) that need local gradients seen before their reduction.
        self.local_tap: LocalGradTap | None = None
        self.certifier: Any = None
        self._quiet_verdict: StepVerdict | None = None
        self._remember = self.config.replay or bool(self.config.audit_every)
        self._reset_step()
        # Events still queued when the interpreter exits are delivered (recipes without close()).
        atexit.register(_close_at_exit, weakref.ref(self))

    # ------------------------------------------------------------------ shared with adapters

    @property
    def params(self) -> list[torch.Tensor]:
        return self.replayer.params

    @params.setter
    def params(self, value: list[torch.Tensor]) -> None:
        self.replayer.params = value

    def gradients_reduced_by(self, wrapper: nn.Module) -> bool:
        """Adapters that give the sentinel the unwrapped module (Lightning, the HF Trainer) tell
        it the DDP wrapper here, before the first step: if it reduces over the sentinel's group,
        the gradients at ``on_grads_ready`` are the same all-reduce on every rank, and the flags
        need no per-step exchange (``flags.py``). Returns whether they now go that way."""
        if not self.flags.reduced and reduced_by_ddp(wrapper, self.comm):
            self.flags.reduced = True
        return self.flags.reduced

    @property
    def replay_fn(self) -> ReplayFn | None:
        return self.replayer.replay_fn if self.config.replay else None

    @replay_fn.setter
    def replay_fn(self, fn: ReplayFn | None) -> None:
        self.replayer.replay_fn = fn

    # ------------------------------------------------------------------ hooks of the loop

    @counted
    def on_step_begin(self, step: int, batch: Any = None) -> None:
        """Start a step: remember the batch and RNG state a replay or audit would need."""
        self.step = step
        self._reset_step()
        try:
            if self.gemm_checks is not None and self.gemm_checks.armed:
                self.gemm_checks.disarm()  # a step that never reached on_step_end left its hooks
            if not self.schedule.quiet(step):
                if self.local_tap is not None and self.schedule.due("local", step):
                    self.local_tap.arm()
                if self.gemm_checks is not None and self.schedule.due("gemm", step):
                    self.gemm_checks.arm()
            if batch is not None and self._remember:
                self.state.batch, self.state.rng = batch, self.rng.capture()
        except Exception as exc:
            self._local_error("on_step_begin", exc)

    def remember_batch(self, batch: Any) -> None:
        """The batch (and RNG state) this step consumes, for a replay or an audit."""
        self.state.batch, self.state.rng = batch, self.rng.capture()

    @counted
    def on_loss(self, loss: torch.Tensor) -> None:
        """Local checks before the reduction: non-finite loss, loss spike.

        The loss stays on its device: reading it costs an accelerator a host sync. Its value is
        read together with the others at the next check step (or after ``MAX_PENDING_LOSSES``
        steps), when the tracker learns it; how its flags reach the other ranks: ``flags.py``.
        """
        flags = due(self.config.flags_every, self.step)
        try:
            self.flags.on_loss(self.state, loss, flags)
        except Exception as exc:
            self._local_error("on_loss", exc)
        finally:
            if flags and not self.flags.reduced:
                self.flags.launch(self.state)

    def observe_local_bucket(self, index: int, buffer: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        """A local gradient bucket (DDP comm-hook wrapper) or parameter gradient (LocalGradTap)
        before its reduction. Digest and squared norm stay on the device until
        ``on_grads_ready`` reads all buckets at once: a host sync here would stall the
        overlap of backward and reduction.
        """
        if not self.schedule.due("local", self.step):
            return
        try:
            with self.schedule.measure("local", sync=False):  # inside the backward pass: no device sync
                self.state.local_on_device[index] = (tensor_sums([buffer])[0], squared_norm(buffer))
            self.state.local_layout[index] = tuple(self._index_of.get(id(p), -1) for p in params)
        except Exception as exc:
            self._local_error("local gradient check", exc)

    @counted
    def on_grads_ready(self) -> StepVerdict:
        """After the data-parallel reduction (and any clipping), right before the optimizer step."""
        try:
            if self.local_tap is not None:
                self.local_tap.disarm()
            return self._grads_ready()
        except SentinelAbort:
            raise
        except Exception as exc:
            return self._internal_error("on_grads_ready", exc)

    @counted
    def on_step_end(self, step: int) -> StepVerdict:
        """After ``optimizer.step()``: parameter checks, the audit, then the step's verdict."""
        try:
            return self._step_end(step)
        except SentinelAbort:
            raise
        except Exception as exc:
            return self._internal_error("on_step_end", exc)

    def close(self) -> None:
        """Check the losses not read yet, deliver pending events and stop the event thread."""
        if self.closed:
            return
        self.closed = True
        try:
            self.flags.read(self.state, final=True)
        except Exception:
            log.exception("sdc sentinel: could not read the last losses")
        self.sink.close()

    # ------------------------------------------------------------------ gradients

    def _reset_step(self) -> None:
        self.state = StepState(self.step)
        self.flags.begin()
        self._findings: list[Finding] = []
        self._checks: list[str] = []
        self._skipped = False
        self._resynced = False

    def _local_error(self, where: str, exc: BaseException) -> None:
        self.state.error = True
        self.errors += 1
        log.exception("sdc sentinel: error in %s at step %s; training continues", where, self.step)
        self.reporter.emit(self.step, "sentinel_error", "ok", (), {"where": where, "error": f"{type(exc).__name__}: {exc}"})
        if self.config.action == "raise":
            raise exc

    def _internal_error(self, where: str, exc: BaseException) -> StepVerdict:
        self._local_error(where, exc)
        return StepVerdict(self.step, "ok", details={"error": f"{type(exc).__name__}: {exc}"})

    def _grad_fingerprints(self) -> torch.Tensor:
        grads = [p.grad if p.grad is not None else p.new_zeros(0) for p in self.params]
        return tensor_sums(grads)

    def _quiet_grads_ready(self) -> StepVerdict:
        """``_grads_ready`` on a step without a periodic check: only the flags, nothing to compare."""
        if due(self.config.flags_every, self.step):
            try:
                flags, error, look = self.flags.settle(self.state, self.params, False)
            except Exception as exc:  # the probe reads values identical on every rank: it fails on all or none
                self._local_error("flag exchange", exc)
                return self._partial()
            if error:
                return self._partial()  # some rank could not take part: nobody acts on this step
            if flags or look:  # every rank saw it (exchanged flags, or the same reduced gradients)
                self._local_anomalies(nonfinite_reduced=look == 1)
        elif self.state.flags:
            self.flags.local_only(self.step, flag_names(self.state.flags), self.state.loss_value)
        return self._partial()

    def _grads_ready(self) -> StepVerdict:
        if self.schedule.quiet(self.step):
            return self._quiet_grads_ready()
        self.schedule.agree(self.comm, self.step)  # before anything that could fail on one rank
        check = self.schedule.due("grads", self.step)
        per_param = None
        digest = (0, 0)
        norm = None
        exchange = check or self.schedule.due("local", self.step)
        try:
            if exchange:
                self.flags.read(self.state)  # this step's loss flags travel with the exchange
            if self.state.local_on_device:
                with self.schedule.measure("local"):
                    self.state.read_local_buckets()
            if check:
                with self.schedule.measure("grads"):
                    per_param = self._grad_fingerprints()
                    digest = tuple(int(v) for v in combine_sums(per_param, [word_count(p) for p in self.params]))
            norm = self.state.local_norm
            if norm is not None and not norm < float("inf"):
                self.state.flags |= FLAG_NONFINITE_GRAD
        except Exception as exc:
            self._local_error("gradient fingerprint", exc)
        early, look = (0, 0), 0
        if due(self.config.flags_every, self.step):
            try:
                *early, look = self.flags.settle(self.state, self.params, exchange)
            except Exception as exc:  # the probe reads values identical on every rank: it fails on all or none
                self._local_error("flag exchange", exc)
        elif self.state.flags and not exchange:
            # Seen on this rank only, on a step without an exchange: nothing can bring the other
            # ranks to a replay, so record what we saw.
            self.flags.local_only(self.step, flag_names(self.state.flags), self.state.loss_value)
        if exchange:
            norm_bits = float_bits(norm) if norm is not None and norm == norm and norm < float("inf") else -1
            d = digest
            vector = torch.tensor([d[0], d[1], ~d[0], ~d[1], self.state.flags, norm_bits, ~norm_bits, int(self.state.error)],
                                  dtype=torch.int64)
            with self.schedule.measure("grads" if check else "local", sync=False):
                reduced = self.comm.max_(vector).tolist()
        else:  # nothing to compare: no collective on this step beyond the flags
            reduced = [0, 0, ~0, ~0, 0, -1, ~-1, 0]
        if reduced[7] or early[1]:
            return self._partial()  # some rank could not fingerprint: nobody compares this step
        reduced[4] |= early[0]
        if check:
            self._checks.append("grads")
            when = self.schedule.details("grads", self.step)
            if reduced[0] != ~reduced[2] or reduced[1] != ~reduced[3]:
                with self.schedule.measure("grads", sync=False):
                    self._vote("grad_check", per_param, grads=True, details=when)
            else:
                self._record(Finding("grad_check", "ok", (), when))
        max_norm, min_norm = reduced[5], ~reduced[6]
        norm_spread = min_norm > 0 and bits_float(max_norm) > self.config.grad_norm_ratio * bits_float(min_norm)
        if reduced[4] or norm_spread or look:
            self._local_anomalies(nonfinite_reduced=look == 1)
        return self._partial()

    def _local_anomalies(self, nonfinite_reduced: bool = False) -> None:
        findings, fault = self.replayer.local_anomalies(self.state, self.config.grad_norm_ratio, self.config.replay)
        if nonfinite_reduced and not findings:
            # Every rank's reduced gradients are non-finite, no rank's loss was: a backward
            # fault on a step without local gradient digests. Seen by all, owned by none.
            findings = [Finding("local_check", "unattributed", (), {
                "reasons": ["nonfinite_reduced_grad"], "replayed": False,
                "why": "the reduced gradients are not finite and no rank's loss or local gradients flagged it"})]
        for finding in findings:
            self._record(finding)
        if fault and self.config.action in ("skip_step", "resync"):
            self._skip()  # the reduced gradients carry the fault to everyone: drop the update

    def _vote(self, kind: str, per_param: torch.Tensor | None, *, grads: bool, details: dict | None = None) -> None:
        names = self.names if grads else self._param_state_names()
        if per_param is None:
            per_param = torch.zeros((len(names), 2), dtype=torch.int64)
        everyone = self.comm.gather(per_param.to(torch.int64)).cpu().tolist()
        result = majority_vote([[tuple(pair) for pair in replica] for replica in everyone], names)
        suspects = tuple(self.peers.suspect(r, n) for r, n in result.minority.items())
        disagreeing = sorted({n for s in suspects for n in s.params} | set(result.unattributed))
        details = {**(details or {}), "disagreeing_params": disagreeing,
                   "buckets": sorted({self._bucket_of[n] for n in disagreeing if n in self._bucket_of})}
        self._record(Finding(kind, result.diagnosis, suspects, details))
        if result.diagnosis == "unattributed" and grads and self.replay_fn is not None:
            finding, good = self.replayer.replay_reduction(self.state, result.unattributed, per_param)
            if finding is not None:
                self._record(finding)
                if finding.diagnosis == "divergence":
                    self._repair(good, grads=True)
            return
        if result.diagnosis != "ok":
            self._repair(result.majority_replica, grads)

    def _repair(self, source_index: int | None, grads: bool) -> None:
        action = self.config.action
        if action == "resync" and source_index is not None:
            self._resync(source_index, grads)
        elif action == "skip_step" and grads:
            self._skip()

    def _skip(self) -> None:
        skip_update(self.params)
        self._skipped = True

    def _resync(self, src_index: int, grads: bool) -> None:
        resync(self.comm, self.params, self._optimizer_tensors(), src_index, grads=grads)
        self._resynced = True
        self.reporter.emit(self.step, "resync", "ok", (), {"source_rank": self.comm.ranks[src_index], "what": "grads" if grads else "params"})

    # ------------------------------------------------------------------ parameters and audits

    def _optimizer_tensors(self) -> dict[str, torch.Tensor]:
        if not self.config.optimizer_state:
            return {}
        return optimizer_tensors(self.optimizer, self.params, self.names)

    def _param_state_names(self) -> list[str]:
        return self.names + list(self._optimizer_tensors())

    def _param_check(self) -> None:
        per_param, error = None, False
        try:
            tensors = [p.detach() for p in self.params] + list(self._optimizer_tensors().values())
            per_param = tensor_sums(tensors)
            digest = tuple(int(v) for v in combine_sums(per_param, [word_count(t) for t in tensors]))
        except Exception as exc:
            self._local_error("parameter fingerprint", exc)
            digest, error = (0, 0), True
        reduced = self.comm.max_(torch.tensor([digest[0], digest[1], ~digest[0], ~digest[1], int(error)], dtype=torch.int64)).tolist()
        if reduced[4]:
            return
        self._checks.append("params")
        when = self.schedule.details("params", self.step)
        if reduced[0] != ~reduced[2] or reduced[1] != ~reduced[3]:
            self._vote("param_check", per_param, grads=False, details=when)
        else:
            self._record(Finding("param_check", "ok", (), when))

    def _step_end(self, step: int) -> StepVerdict:
        self.step = step
        try:
            return self._checks_of_step_end(step)
        finally:
            self.schedule.end_step(step)

    def _checks_of_step_end(self, step: int) -> StepVerdict:
        if self.schedule.quiet(step):  # most steps: no periodic check, only what on_grads_ready found
            verdict = self._partial()
            if self.certifier is not None:
                self.certifier.on_verdict(self, verdict)
            self._maybe_raise(verdict)
            return verdict
        self.schedule.agree(self.comm, step)  # unless on_grads_ready did: before anything that could fail
        if self.schedule.due("params", step):
            with self.schedule.measure("params"):
                self._param_check()
        if self.audit_due(step):
            with self.schedule.measure("audit"):
                findings = self.auditor.run(step, self.state.batch, self.schedule.details("audit", step))
            if findings:
                self._checks.append("audit")
            for finding in findings:
                self._record(finding)
        if self.gemm_checks is not None and self.schedule.due("gemm", step):
            for finding in self.gemm_checks.collect(self.comm, self.peers):
                self._checks.append("gemm")
                self._record(finding)
        verdict = self._partial()
        if self._checks:  # when the checks run, as the ranks agreed: a fault is named within one period
            verdict = replace(verdict, details={**verdict.details, "check_period": dict(self.schedule.period),
                                                "next_check_step": {k: self.schedule.next_step(k, step) for k in self.schedule.due_kinds(step)}})
        if verdict.ok and self._checks and not self.state.error:
            self.last_verified_step = step
        if self.certifier is not None:
            self.certifier.on_verdict(self, verdict)
        self._maybe_raise(verdict)
        return verdict

    def audit_due(self, step: int) -> bool:
        """Whether ``on_step_end(step)`` will run a recompute audit (the same answer on every rank)."""
        return self.replayer.replay_fn is not None and self.schedule.due("audit", step)

    def check_due(self, kind: str, step: int) -> bool:
        """Whether step ``step`` runs the periodic check ``kind`` (``local``, ``grads``,
        ``params``, ``audit``), as the ranks agreed: the same answer on every rank."""
        return self.audit_due(step) if kind == "audit" else self.schedule.due(kind, step)

    # ------------------------------------------------------------------ verdicts

    def _record(self, finding: Finding) -> None:
        self._findings.append(finding)
        self.reporter.finding(self.step, finding)

    def _partial(self) -> StepVerdict:
        if not (self._findings or self._checks or self._skipped or self._resynced):
            if self._quiet_verdict is None or self._quiet_verdict.step != self.step:  # most steps: nothing to weigh
                self._quiet_verdict = StepVerdict(self.step, details={"findings": []})
            return self._quiet_verdict
        return step_verdict(self.step, self._findings, checks=self._checks, skipped=self._skipped, resynced=self._resynced)

    def _maybe_raise(self, verdict: StepVerdict) -> None:
        if self.config.action != "raise" or verdict.ok:
            return
        code = EXIT_RERUN_ELSEWHERE if verdict.diagnosis == "unattributed" or not verdict.suspects else EXIT_VALIDATION_FAILED
        self.close()  # the events must reach the store or the outbox before we exit
        raise SentinelAbort(code, verdict)
