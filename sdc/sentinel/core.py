"""ReplicaSentinel: checks, on every data-parallel replica, that replicas which must hold the
same bytes do, names the chip that disagrees, and replays steps to tell transient faults from
persistent ones — while the job runs.

Protocol per step (every rank runs the same collectives in the same order):

* ``on_loss``: an asynchronous all-reduce(MAX) of two int64s (local anomaly flags, error flag),
  started before the backward pass and finished by the time it ends.
* ``on_grads_ready``, on check steps only: one all-reduce(MAX) of a few int64s — the reduced
  gradients' digest and its complement (so MAX and MIN travel together), local flags, the
  local gradient norm, an error flag. Only if something is off: an all-gather of
  per-parameter digests and a majority vote, or a replay of the anomalous rank's step (then
  on a buddy rank).
* ``on_step_end``: the same for parameters (and optimizer state) every ``param_every`` steps.

A local failure (an exception in the sentinel's own code) becomes the error flag, so every
rank skips the comparison together instead of one rank leaving a collective unmatched.
"""

from __future__ import annotations

import logging
import math
import os
import struct
from typing import Any, Callable, Sequence

import torch
from torch import nn

from sdc.digest import combine_sums, plan_buckets, squared_norm, tensor_sums, word_count
from sdc.node import devices
from sdc.records import JobEvent, new_id, utcnow
from sdc.sentinel.comm import Collectives
from sdc.sentinel.config import (
    EXIT_RERUN_ELSEWHERE,
    EXIT_VALIDATION_FAILED,
    SentinelConfig,
    due,
)
from sdc.sentinel.events import EventSink, store_deliver
from sdc.sentinel.replay import ReplayFn, capture_rng
from sdc.sentinel.replayer import (
    FLAG_LOSS_SPIKE,
    FLAG_NAMES,
    FLAG_NONFINITE_GRAD,
    FLAG_NONFINITE_LOSS,
    ReplayProtocol,
)
from sdc.sentinel.tap import LocalGradTap
from sdc.sentinel.vote import LossTracker, Suspect, Verdict, majority_vote, worst

log = logging.getLogger(__name__)

# Losses kept on the device between reads (see ``on_loss``): bounds the delay of a local-only
# report when nothing else makes the sentinel read them.
MAX_PENDING_LOSSES = 64
ANOMALY_FLAGS = {"nonfinite_loss": FLAG_NONFINITE_LOSS, "loss_spike": FLAG_LOSS_SPIKE}


class SentinelAbort(SystemExit):
    """Raised with action='raise': exit code 16 (rerun elsewhere to disambiguate) or 17 (validation failed)."""

    def __init__(self, code: int, verdict: Verdict):
        super().__init__(code)
        self.verdict = verdict


def _float_bits(value: float) -> int:
    return struct.unpack("<q", struct.pack("<d", value))[0]


def _bits_float(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<q", bits))[0]


def json_safe(value: Any) -> Any:
    """Details as strict JSON: a non-finite float (an inf loss is exactly what we report) becomes text."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def default_job_id() -> str:
    for name in ("SDC_JOB_ID", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        if os.environ.get(name):
            return os.environ[name]
    return "local"


def local_chip_id(global_rank: int) -> str:
    """This rank's chip: the accelerator it runs on, or virtual CPU chip ``cpu:<rank>``."""
    backend = devices.accelerator_backend()
    if backend == "cuda":
        return devices.accelerator_chip("cuda", torch.cuda.current_device()).chip.chip_id
    return devices.cpu_chip(global_rank).chip.chip_id


class ReplicaSentinel(ReplayProtocol):
    """Cross-replica and local checks for one data-parallel replica (create it on every rank).

    Args:
        model: the module whose parameters and gradients are compared (a DDP wrapper is fine).
        optimizer: its optimizer, for ``resync`` and optimizer-state checks.
        group: the process group of replicas holding identical copies (default: world;
            for HSDP the replicate dimension).
        config: a SentinelConfig.
        replay_fn: ``replay_fn(batch) -> loss``, re-runs the forward pass without
            data-parallel hooks; without it local anomalies are reported but not replayed.
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
        self.replay_fn = replay_fn
        self.comm = Collectives(group)
        seen: set[int] = set()
        self.names: list[str] = []
        self.params: list[torch.Tensor] = []
        for name, param in model.named_parameters():
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                self.names.append(name.removeprefix("module."))
                self.params.append(param)
        self._index_of = {id(p): i for i, p in enumerate(self.params)}
        self.buckets = plan_buckets(list(zip(self.names, self.params)), self.config.bucket_bytes)
        self._bucket_of = {name: b.index for b in self.buckets for name in b.names}
        self.job_id = self.config.job_id or default_job_id()
        self.host = devices.hostname()
        self.chip_id = self.config.chip_id or local_chip_id(self.comm.global_rank)
        # Who is who: gathered once so every rank can name any suspect's chip.
        self.peers: list[tuple[int, str, str]] = self.comm.gather_objects((self.comm.global_rank, self.host, self.chip_id))
        if deliver is None:
            deliver_fn, close, connect = store_deliver(self.config.database_url, self.config.outbox_dir)
            self.sink = EventSink(deliver_fn, close, connect=connect)
        else:
            self.sink = EventSink(deliver)
        self.loss_tracker = LossTracker(self.config.loss_spike_factor, self.config.warmup_steps)
        self.last_verified_step: int | None = None
        self.step = -1
        self.errors = 0
        # Set by adapters (attach_ddp) that need local gradients seen before their reduction.
        self.local_tap: LocalGradTap | None = None
        self._pending_losses: list[tuple[int, torch.Tensor]] = []
        self._reset_step()

    # ------------------------------------------------------------------ hooks of the loop

    def on_step_begin(self, step: int, batch: Any = None) -> None:
        """Start a step: remember the batch and RNG state a replay would need."""
        self.step = step
        self._reset_step()
        try:
            if self.local_tap is not None and due(self.config.local_every, step):
                self.local_tap.arm()
            if self.config.replay and batch is not None:
                self._batch, self._rng = batch, capture_rng()
        except Exception as exc:
            self._local_error("on_step_begin", exc)

    def on_loss(self, loss: torch.Tensor) -> None:
        """Local checks before the reduction: non-finite loss, loss spike.

        The loss stays on its device: reading it costs an accelerator a host sync, so the
        values of all steps since the last read are read together, at the next step that
        exchanges flags (check steps, ``flags_every``) or every ``MAX_PENDING_LOSSES`` steps.
        """
        try:
            self._loss = loss.detach()
            self._pending_losses.append((self.step, self._loss))
            if due(self.config.flags_every, self.step) or len(self._pending_losses) >= MAX_PENDING_LOSSES:
                self._read_losses()
        except Exception as exc:
            self._local_error("on_loss", exc)
        finally:
            if due(self.config.flags_every, self.step):
                self._launch_flags()

    def _read_losses(self) -> None:
        """Run the loss tracker over the pending losses, in step order, with one host sync.

        The current step's anomaly becomes this step's flags; an earlier step's was seen on
        this rank alone, too late to bring the other ranks to a replay, so it is recorded.
        """
        pending, self._pending_losses = self._pending_losses, []
        if not pending:
            return
        values = torch.stack([loss.reshape(()).to(torch.float64) for _, loss in pending]).tolist()
        for (step, _), value in zip(pending, values):
            anomaly = self.loss_tracker.check(value)
            if step == self.step:
                self._loss_value = value
                if anomaly:
                    self._flags |= ANOMALY_FLAGS[anomaly]
            elif anomaly:
                self._local_only(step, [anomaly], value)

    def _local_only(self, step: int, reasons: list[str], loss: float | None) -> None:
        # It stays out of the verdict, which every rank must reach identically (a lone skip
        # or raise would split the replicas).
        me = self._suspect(self.comm.index, ())
        log.warning("sdc sentinel: step %s: local %s on this rank (not replayed: flags_every=%s)", step, reasons, self.config.flags_every)
        self._emit("local_check", "unattributed", (me,), {"reasons": reasons, "replayed": False, "local_only": True, "loss": loss}, step=step)

    def _launch_flags(self) -> None:
        if self._flags_work is None:
            self._flags_work = self.comm.max_async(torch.tensor([self._flags, int(self._error)], dtype=torch.int64))

    def observe_local_bucket(self, index: int, buffer: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        """A local gradient bucket (DDP comm-hook wrapper) or parameter gradient (LocalGradTap)
        before its reduction.

        Fingerprint and squared norm stay on the device until ``on_grads_ready`` reads all
        buckets at once: a host sync here would stall the overlap of backward and reduction.
        """
        if not due(self.config.local_every, self.step):
            return
        try:
            self._local_on_device[index] = (tensor_sums([buffer])[0], squared_norm(buffer))
            self._local_layout[index] = tuple(self._index_of.get(id(p), -1) for p in params)
        except Exception as exc:
            self._local_error("local gradient check", exc)

    def _read_local_buckets(self) -> None:
        """Bring the local buckets' fingerprints and squared norms to the host, in one go."""
        if not self._local_on_device:
            return
        indices = list(self._local_on_device)
        sums = torch.stack([self._local_on_device[i][0] for i in indices]).tolist()
        squares = torch.stack([self._local_on_device[i][1] for i in indices]).tolist()
        for i, pair, sq in zip(indices, sums, squares):
            self._local_buckets[i] = ((int(pair[0]), int(pair[1])), float(sq))
        self._local_on_device = {}

    def on_grads_ready(self) -> Verdict:
        """After the data-parallel reduction, before clipping and the optimizer step."""
        try:
            if self.local_tap is not None:
                self.local_tap.disarm()
            return self._grads_ready()
        except SentinelAbort:
            raise
        except Exception as exc:
            return self._internal_error("on_grads_ready", exc)

    def on_step_end(self, step: int) -> Verdict:
        """After ``optimizer.step()``: parameter checks, then the step's verdict."""
        try:
            return self._step_end(step)
        except SentinelAbort:
            raise
        except Exception as exc:
            return self._internal_error("on_step_end", exc)

    def close(self) -> None:
        """Check the losses not read yet, deliver pending events and stop the event thread."""
        try:
            self._read_losses()
        except Exception:
            log.exception("sdc sentinel: could not read the last losses")
        self.sink.close()

    # ------------------------------------------------------------------ gradients

    def _reset_step(self) -> None:
        self._batch: Any = None
        self._rng: dict | None = None
        self._flags = 0
        self._error = False
        self._loss: torch.Tensor | None = None
        self._loss_value: float | None = None
        self._flags_work: Any = None
        # bucket -> (fingerprint, squared norm): as device tensors until on_grads_ready reads
        # them all at once, then as host values
        self._local_on_device: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._local_buckets: dict[int, tuple[tuple[int, int], float]] = {}
        self._local_layout: dict[int, tuple[int, ...]] = {}
        self._findings: list[tuple[str, str, tuple[Suspect, ...], dict]] = []
        self._checks: list[str] = []
        self._skipped = False
        self._resynced = False
        self._verdict_done = False

    def _local_error(self, where: str, exc: BaseException) -> None:
        self._error = True
        self.errors += 1
        log.exception("sdc sentinel: error in %s at step %s; training continues", where, self.step)
        self._emit("sentinel_error", "ok", (), {"where": where, "error": f"{type(exc).__name__}: {exc}"})
        if self.config.action == "raise":
            raise exc

    def _internal_error(self, where: str, exc: BaseException) -> Verdict:
        self._local_error(where, exc)
        return Verdict(self.step, "ok", details={"error": f"{type(exc).__name__}: {exc}"})

    def _grad_fingerprints(self) -> torch.Tensor:
        grads = [p.grad if p.grad is not None else p.new_zeros(0) for p in self.params]
        return tensor_sums(grads)

    def _local_norm(self) -> float | None:
        if not self._local_buckets:
            return None
        return sum(sq for _, sq in self._local_buckets.values()) ** 0.5

    def _grads_ready(self) -> Verdict:
        check = due(self.config.grad_every, self.step)
        per_param = None
        digest = (0, 0)
        norm = None
        exchange = check or due(self.config.local_every, self.step)
        try:
            if exchange:
                self._read_losses()  # this step's loss flags travel with the exchange
            self._read_local_buckets()
            if check:
                per_param = self._grad_fingerprints()
                digest = tuple(int(v) for v in combine_sums(per_param, [word_count(p) for p in self.params]))
            norm = self._local_norm()
            if norm is not None and not norm < float("inf"):
                self._flags |= FLAG_NONFINITE_GRAD
        except Exception as exc:
            self._local_error("gradient fingerprint", exc)
        early = [0, 0]
        if due(self.config.flags_every, self.step):
            self._launch_flags()  # normally already done by on_loss
            early = self._flags_work.wait()
            self._flags_work = None
        elif self._flags and not exchange:
            # Seen on this rank only, on a step without an exchange: nothing can bring the other
            # ranks to a replay, so record what we saw.
            self._local_only(self.step, [name for bit, name in FLAG_NAMES.items() if self._flags & bit], self._loss_value)
        if exchange:
            norm_bits = _float_bits(norm) if norm is not None and norm == norm and norm < float("inf") else -1
            vector = torch.tensor(
                [digest[0], digest[1], ~digest[0], ~digest[1], self._flags, norm_bits, ~norm_bits, int(self._error)],
                dtype=torch.int64,
            )
            reduced = self.comm.max_(vector).tolist()
        else:  # nothing to compare: no collective on this step beyond the early flags
            reduced = [0, 0, ~0, ~0, 0, -1, ~-1, 0]
        if reduced[7] or early[1]:
            return self._partial()  # some rank could not fingerprint: nobody compares this step
        reduced[4] |= early[0]
        if check:
            self._checks.append("grads")
            if reduced[0] != ~reduced[2] or reduced[1] != ~reduced[3]:
                self._vote("grad_check", per_param, grads=True)
            else:
                self._record("grad_check", "ok", (), {})
        max_norm, min_norm = reduced[5], ~reduced[6]
        norm_spread = min_norm > 0 and _bits_float(max_norm) > self.config.grad_norm_ratio * _bits_float(min_norm)
        if reduced[4] or norm_spread:
            self._local_anomalies(norm)
        return self._partial()

    def _vote(self, kind: str, per_param: torch.Tensor | None, *, grads: bool) -> None:
        names = self.names if grads else self._param_state_names()
        if per_param is None:
            per_param = torch.zeros((len(names), 2), dtype=torch.int64)
        everyone = self.comm.gather(per_param.to(torch.int64)).cpu().tolist()
        fingerprints = [[tuple(pair) for pair in replica] for replica in everyone]
        result = majority_vote(fingerprints, names)
        suspects = tuple(self._suspect(r, names_) for r, names_ in result.minority.items())
        details: dict[str, Any] = {
            "disagreeing_params": sorted({n for s in suspects for n in s.params} | set(result.unattributed)),
        }
        details["buckets"] = sorted({self._bucket_of[n] for n in details["disagreeing_params"] if n in self._bucket_of})
        self._record(kind, result.diagnosis, suspects, details)
        if result.diagnosis == "unattributed" and grads and self.config.replay and self.replay_fn is not None:
            self._replay_reduction(result.unattributed)
        self._repair(kind, result, grads)

    def _repair(self, kind: str, result: Any, grads: bool) -> None:
        if result.diagnosis == "ok":
            return
        action = self.config.action
        if action == "resync" and result.majority_replica is not None:
            self._resync(result.majority_replica, grads)
        elif action == "skip_step" and grads:
            self._skip()

    def _skip(self) -> None:
        for p in self.params:
            p.grad = None
        self._skipped = True

    def _resync(self, src_index: int, grads: bool) -> None:
        with torch.no_grad():
            if grads:
                for p in self.params:
                    if p.grad is not None:
                        self.comm.broadcast_(p.grad, src_index)
            else:
                for p in self.params:
                    self.comm.broadcast_(p.data, src_index)
                for tensor in self._optimizer_tensors().values():
                    self.comm.broadcast_(tensor, src_index)
        self._resynced = True
        self._emit("resync", "ok", (), {"source_rank": self.comm.ranks[src_index], "what": "grads" if grads else "params"})

    # ------------------------------------------------------------------ parameters

    def _optimizer_tensors(self) -> dict[str, torch.Tensor]:
        if self.optimizer is None or not self.config.optimizer_state:
            return {}
        out = {}
        for i, p in enumerate(self.params):
            for key, value in sorted(self.optimizer.state.get(p, {}).items()):
                if isinstance(value, torch.Tensor) and value.numel() > 0:
                    out[f"{self.names[i]}:{key}"] = value
        return out

    def _param_state_names(self) -> list[str]:
        return self.names + list(self._optimizer_tensors())

    def _step_end(self, step: int) -> Verdict:
        if step != self.step:
            self.step = step
        if due(self.config.param_every, step):
            per_param, error = None, False
            try:
                tensors = [p.detach() for p in self.params] + list(self._optimizer_tensors().values())
                per_param = tensor_sums(tensors)
                digest = tuple(int(v) for v in combine_sums(per_param, [word_count(t) for t in tensors]))
            except Exception as exc:
                self._local_error("parameter fingerprint", exc)
                digest, error = (0, 0), True
            reduced = self.comm.max_(torch.tensor([digest[0], digest[1], ~digest[0], ~digest[1], int(error)], dtype=torch.int64)).tolist()
            if not reduced[4]:
                self._checks.append("params")
                if reduced[0] != ~reduced[2] or reduced[1] != ~reduced[3]:
                    self._vote("param_check", per_param, grads=False)
                else:
                    self._record("param_check", "ok", (), {})
        verdict = self._partial()
        if verdict.ok and self._checks and not self._error:
            self.last_verified_step = step
        self._maybe_raise(verdict)
        return verdict

    # ------------------------------------------------------------------ verdicts and events

    def _suspect(self, index: int, params: Sequence[str]) -> Suspect:
        rank, host, chip = self.peers[index]
        return Suspect(rank=rank, host=host, chip_id=chip, params=tuple(params))

    def _record(self, kind: str, diagnosis: str, suspects: tuple[Suspect, ...], details: dict) -> None:
        self._findings.append((kind, diagnosis, suspects, details))
        if diagnosis != "ok" or self.config.record_ok:
            self._emit(kind, diagnosis, suspects, details)
        if diagnosis not in ("ok", "correct"):
            log.warning("sdc sentinel: step %s %s: %s, suspects %s", self.step, kind, diagnosis, [s.rank for s in suspects])

    def _emit(self, kind: str, diagnosis: str, suspects: Sequence[Suspect], details: dict, step: int | None = None) -> None:
        try:
            event = JobEvent(
                event_id=new_id(),
                job_id=self.job_id,
                step=max(self.step if step is None else step, 0),
                rank=self.comm.global_rank,
                world_size=self.comm.size,
                host=self.host,
                kind=kind,
                diagnosis=diagnosis,
                observed_at=utcnow(),
                chip_id=self.chip_id,
                details=json_safe({
                    **details,
                    "suspects": [s.to_dict() for s in suspects],
                    "suspect": any(s.rank == self.comm.global_rank for s in suspects),
                    "action": self.config.action,
                }),
            )
            self.sink.submit(event)
        except Exception:
            log.exception("sdc sentinel: could not build an event")

    def _partial(self) -> Verdict:
        diagnoses = [f[1] for f in self._findings]
        overall = worst(diagnoses)
        # A later replay that attributes a disagreement supersedes the earlier 'unattributed'.
        if overall == "unattributed" and any(f[0] == "replay" and f[1] == "divergence" for f in self._findings):
            overall = "divergence"
        suspects: dict[int, Suspect] = {}
        for _, diagnosis, found, _ in self._findings:
            if diagnosis in ("ok", "correct"):
                continue
            for s in found:
                prior = suspects.get(s.rank)
                params = tuple(dict.fromkeys((prior.params if prior else ()) + s.params))
                suspects[s.rank] = Suspect(s.rank, s.host, s.chip_id, params)
        return Verdict(
            step=self.step,
            diagnosis=overall,
            suspects=tuple(suspects[r] for r in sorted(suspects)),
            checks=tuple(self._checks),
            skipped=self._skipped,
            resynced=self._resynced,
            details={"findings": [(k, d) for k, d, _, _ in self._findings]},
        )

    def _maybe_raise(self, verdict: Verdict) -> None:
        if self.config.action != "raise" or verdict.ok:
            return
        code = EXIT_RERUN_ELSEWHERE if verdict.diagnosis == "unattributed" or not verdict.suspects else EXIT_VALIDATION_FAILED
        self.sink.close()  # the events must reach the store or the outbox before we exit
        raise SentinelAbort(code, verdict)
