"""Replay of training steps, run by every rank of the group in lockstep.

What one replay is: capture what a step consumed (batch, RNG state), re-run its forward and
backward through ``replay_fn(batch) -> loss`` (which must compute exactly the loss the step
computed: same loss function, same scaling), and digest the result as the step was digested.
A replay never touches ``.grad`` (gradients come from ``torch.autograd.grad``), restores the
caller's RNG state and the module's buffers (BatchNorm statistics) afterwards.

What the ``Replayer`` decides with it: which replica raised a local anomaly, replay its step
there and then on a buddy (transient / persistent / data); or, when the reduced gradients have
no majority, recompute the reduction and see who kept it. It reads the step only from the
``StepState`` it is given. Every collective is entered by every rank, whatever failed locally:
a failure becomes a value the ranks exchange, never a skipped collective.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from sdc.digest import Bucket, bucket_sums, digest_sums, tensor_sums, word_count
from sdc.sentinel.checks import flag_names, norm_outliers
from sdc.sentinel.comm import Collectives
from sdc.sentinel.identity import Peers
from sdc.sentinel.state import StepState
from sdc.sentinel.vote import Finding

log = logging.getLogger(__name__)

ReplayFn = Callable[[Any], torch.Tensor]


# ---------------------------------------------------------------------- one replay


class RngCapture:
    """Takes the RNG state a step starts from: the CPU generator's, CUDA's once CUDA is in use,
    and, for another accelerator, that device type's generators. What to look for is decided
    once: this runs at the start of every training step."""

    def __init__(self, device: torch.device | None = None):
        self._cuda = torch.backends.cuda.is_built()
        self._other: tuple[str, Callable[[], Any]] | None = None
        if device is not None and device.type not in ("cpu", "cuda", "meta"):
            get_all = getattr(getattr(torch, device.type, None), "get_rng_state_all", None)
            if get_all is not None:
                self._other = (device.type, get_all)

    def capture(self) -> dict[str, Any]:
        state: dict[str, Any] = {"cpu": torch.get_rng_state()}
        if self._cuda and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        if self._other is not None:
            state[self._other[0]] = self._other[1]()
        return state


def capture_rng(device: torch.device | None = None) -> dict[str, Any]:
    """The CPU generator's state and, for an accelerator, that device type's generators."""
    return RngCapture(device).capture()


def _set_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    for backend, value in state.items():
        if backend == "cpu":
            continue
        module = getattr(torch, backend, None)
        set_all = getattr(module, "set_rng_state_all", None)
        if set_all is not None:
            set_all(value)


@contextmanager
def rng_state(state: dict[str, Any]) -> Iterator[None]:
    """Run with ``state`` as the RNG state, then put the caller's state back."""
    saved = capture_rng()
    for backend in state:
        if backend not in saved:
            saved = {**saved, **{k: v for k, v in capture_rng(torch.device(backend)).items() if k == backend}}
    _set_rng(state)
    try:
        yield
    finally:
        _set_rng(saved)


@contextmanager
def buffers_kept(buffers: Sequence[torch.Tensor]) -> Iterator[None]:
    """Undo what a replayed forward does to buffers (BatchNorm running statistics)."""
    saved = [b.detach().clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                buffer.copy_(value)


def to_device(value: Any, device: torch.device) -> Any:
    """A batch with every tensor moved to ``device`` (dicts, lists, tuples followed)."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        moved = {k: to_device(v, device) for k, v in value.items()}
        if type(value) is dict:
            return moved
        try:  # a mapping type of the framework's (transformers' BatchEncoding) where it rebuilds
            return type(value)(moved)
        except Exception:
            return moved
    if isinstance(value, (list, tuple)):
        moved = [to_device(v, device) for v in value]
        return type(value)(moved) if not hasattr(value, "_fields") else type(value)(*moved)
    return value


@dataclass(frozen=True)
class LocalResult:
    """Digest of one rank's local step: its loss, and its local gradient buckets if seen."""

    loss: tuple[int, int]
    buckets: tuple[tuple[int, int], ...] | None = None

    def matches(self, other: "LocalResult") -> bool:
        if self.loss != other.loss:
            return False
        if self.buckets is None or other.buckets is None:
            return True
        return self.buckets == other.buckets


def loss_fingerprint(loss: torch.Tensor) -> tuple[int, int]:
    total, weighted = digest_sums(loss.detach())
    return int(total), int(weighted)


def replay_grads(replay_fn: ReplayFn, batch: Any, rng: dict[str, Any], params: Sequence[torch.Tensor],
                 buffers: Sequence[torch.Tensor] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Loss and local gradients of the step re-run from ``rng`` on ``batch``."""
    with rng_state(rng), buffers_kept(buffers), torch.enable_grad():
        loss = replay_fn(batch)
        grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return loss.detach(), [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]


def local_result(loss: torch.Tensor, grads: Sequence[torch.Tensor], layout: Sequence[Sequence[int]] | None) -> LocalResult:
    """Digest a replayed step in the layout the DDP hook saw (bucket -> parameter indices)."""
    if layout is None:
        return LocalResult(loss_fingerprint(loss))
    buckets = []
    for indices in layout:
        tensors = [grads[i] for i in indices]
        per = tensor_sums(tensors)
        bucket = Bucket(0, tuple(str(i) for i in indices), tuple(word_count(t) for t in tensors))
        row = bucket_sums(per, [bucket])[0]
        buckets.append((int(row[0]), int(row[1])))
    return LocalResult(loss_fingerprint(loss), tuple(buckets))


def original_result(state: StepState) -> LocalResult | None:
    """What the step computed on this rank, as a replay will be compared with it."""
    if state.loss is None:
        return None
    layout = state.layout()
    buckets = tuple(state.local_buckets[i][0] for i in sorted(state.local_buckets)) if layout else None
    return LocalResult(loss_fingerprint(state.loss), buckets)


# ---------------------------------------------------------------------- the protocol


class Replayer:
    """Replays steps across the group to attribute what the cross-replica checks could not.

    Args:
        comm: the group's collectives.
        params: the watched parameters, in the sentinel's order.
        names: their names.
        peers: who each replica is, to name suspects.
        replay_fn: ``replay_fn(batch) -> loss`` (may be set later by an adapter).
        buffers: module buffers a replayed forward must leave as they were.
    """

    def __init__(self, comm: Collectives, params: Sequence[torch.Tensor], names: Sequence[str], peers: Peers,
                 replay_fn: ReplayFn | None = None, buffers: Sequence[torch.Tensor] = ()):
        self.comm, self.params, self.names, self.peers = comm, params, list(names), peers
        self.replay_fn = replay_fn
        self.buffers = list(buffers)

    @property
    def device(self) -> torch.device:
        return self.params[0].device if self.params else torch.device("cpu")

    def replay_here(self, batch: Any, rng: dict, layout: list | None) -> LocalResult:
        loss, grads = replay_grads(self.replay_fn, to_device(batch, self.device), rng, self.params, self.buffers)
        return local_result(loss, grads, layout)

    def local_anomalies(self, state: StepState, ratio: float, replay: bool = True) -> tuple[list[Finding], bool]:
        """Exchange every rank's flags and local norm; replay each anomalous rank.

        Returns the findings and whether a chip fault was established (the caller drops the
        update under skip_step/resync: the reduced gradients carry the fault to everyone).
        """
        rows = self.comm.gather_objects((state.flags, state.local_norm, state.loss_value))
        norms = [r[1] if r[1] is not None else 0.0 for r in rows]
        anomalous = {i for i, r in enumerate(rows) if r[0]}
        if all(r[1] is not None for r in rows):
            anomalous |= set(norm_outliers(norms, ratio))
        if not anomalous:
            return [], False
        reasons = {i: flag_names(rows[i][0]) or ["grad_norm_outlier"] for i in anomalous}
        base = {"local_norms": norms, "losses": [r[2] for r in rows]}
        if self.comm.size > 1 and 2 * len(anomalous) > self.comm.size:
            # Most replicas see it: the data or the model, not one chip.
            return [Finding("local_check", "correct", (), {**base, "anomalous_ranks": [self.comm.ranks[i] for i in sorted(anomalous)]})], False
        findings, fault = [], False
        for index in sorted(anomalous):
            diagnosis, extra = self.replay_rank(state, index, replay)
            suspects = (self.peers.suspect(index),) if diagnosis in ("transient", "persistent", "unattributed") else ()
            kind = "replay" if extra.get("replayed") else "local_check"
            findings.append(Finding(kind, diagnosis, suspects, {**base, **extra, "reasons": reasons[index]}))
            fault = fault or diagnosis in ("transient", "persistent")
        return findings, fault

    def replay_rank(self, state: StepState, index: int, replay: bool = True) -> tuple[str, dict]:
        """Replay the anomalous replica ``index``'s step on itself, then on a buddy."""
        can = replay and self.replay_fn is not None
        if not all(self.comm.gather_objects(can and (self.comm.index != index or state.rng is not None))):
            return "unattributed", {"replayed": False, "why": "no replay_fn or no saved batch"}
        package = None
        if self.comm.index == index:
            try:
                layout = state.layout()
                original = original_result(state)
                if original is not None and layout is None:
                    original = LocalResult(original.loss)
                again = self.replay_here(state.batch, state.rng, layout)
                package = {
                    "same": again.matches(original) if original is not None else None,
                    "batch": to_device(state.batch, torch.device("cpu")),
                    "rng": state.rng,
                    "layout": layout,
                    "original": original,
                }
            except Exception as exc:
                log.exception("sdc sentinel: replay failed on this rank at step %s", state.step)
                package = {"same": None, "error": f"{type(exc).__name__}: {exc}"}
        package = self.comm.broadcast_object(package, index)
        if package.get("same") is None:
            return "unattributed", {"replayed": False, "why": package.get("error", "no local result to compare")}
        if not package["same"]:
            return "transient", {"replayed": True, "replay": "differs on the same rank"}
        if self.comm.size == 1:
            return "unattributed", {"replayed": True, "replay": "reproduces, and there is no buddy replica to tell data from chip"}
        buddy = (index + 1) % self.comm.size
        verdict = None
        if self.comm.index == buddy:
            try:
                again = self.replay_here(package["batch"], package["rng"], package["layout"])
                verdict = again.matches(package["original"])
            except Exception:
                log.exception("sdc sentinel: buddy replay failed at step %s", state.step)
                verdict = None
        verdict = self.comm.broadcast_object(verdict, buddy)
        extra = {"replayed": True, "buddy_rank": self.comm.ranks[buddy]}
        if verdict is None:
            return "unattributed", {**extra, "replay": "buddy replay failed"}
        if verdict:
            return "correct", {**extra, "replay": "buddy reproduces it: the data caused it"}
        return "persistent", {**extra, "replay": "reproduces on the rank, not on its buddy"}

    def replay_reduction(self, state: StepState, names: Sequence[str], have: torch.Tensor) -> tuple[Finding | None, int | None]:
        """No majority on the reduced gradients: recompute them and see which replica kept them.

        ``have`` is this rank's per-parameter digests of its reduced gradients. Returns the
        finding (None if the ranks could not all replay) and the index of a replica that kept
        the recomputed reduction (the source of a repair), if any.
        """
        ok = self.replay_fn is not None and state.rng is not None and state.batch is not None
        if not all(self.comm.gather_objects(ok)):
            return None, None
        failed = False
        try:
            _, grads = replay_grads(self.replay_fn, state.batch, state.rng, self.params, self.buffers)
        except Exception:
            log.exception("sdc sentinel: reduction replay failed at step %s", state.step)
            failed, grads = True, [torch.zeros_like(p) for p in self.params]
        # Entered by every rank, failed or not, so no peer waits on an all-reduce nobody joins.
        for g in grads:  # DDP's convention: divide, then sum
            g.div_(self.comm.size)
            self.comm.all_sum_(g)
        mismatch = None
        if not failed:
            want = tensor_sums(grads).tolist()
            mismatch = [self.names[i] for i, (a, b) in enumerate(zip(want, have.tolist()))
                        if a != b and self.params[i].grad is not None]
        rows = self.comm.gather_objects(mismatch)
        if any(r is None for r in rows):
            return Finding("replay", "unattributed", (), {"attributed_by": "replay", "why": "a rank could not replay"}), None
        bad = [i for i, r in enumerate(rows) if r]
        if bad and len(bad) < self.comm.size:
            suspects = tuple(self.peers.suspect(i, tuple(rows[i])) for i in bad)
            good = next(i for i in range(self.comm.size) if not rows[i])
            return Finding("replay", "divergence", suspects, {"attributed_by": "replay", "disagreeing_params": sorted(set(names))}), good
        return Finding("replay", "unattributed", (), {"attributed_by": "replay", "replicas_off": [self.comm.ranks[i] for i in bad]}), None
