"""How a rank's local anomaly flags (non-finite loss, loss spike, non-finite local gradient)
reach the other ranks in time for a replay of the step that raised them.

A replay needs every rank to stop at the same step, which needs a value every rank has. Two
ways to get one, chosen by what the gradients the sentinel sees are:

* **Reduced gradients** (DDP, or a single replica): a NaN or Inf anywhere upstream of one
  rank's loss becomes non-finite local gradients there, and the all-reduce carries them into
  every rank's reduced gradients, bit-identically. So every rank reads the largest magnitude
  of a sample of them (``GradientProbe``: no collective, nothing on the wire) and reaches
  the same answer; only when it is not finite, or jumped a thousandfold (``GradProbe``: an
  exponent-bit upset can overflow one rank's loss to Inf while its gradients, huge, stay
  finite), do the ranks exchange their flags (the replayer's gather) to find the origin. A
  local-only signal — a loss spike whose gradients stay ordinary — travels with the next
  periodic exchange and is reported as this rank's ``local_check`` (not replayed: that
  step's batch is gone). This replaced an all-reduce on every step, whose host cost with four ranks sharing
  two cores was ~5 ms a step (2 % of it).
* **Sharded gradients** (FSDP/HSDP: each rank reduces a different shard, so a NaN reaches only
  some ranks): the flags travel in an asynchronous all-reduce of two int64s, launched when the
  loss is known and finished while the backward runs.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Sequence

import torch
import torch.distributed as dist

from sdc.digest import native
from sdc.sentinel.checks import ANOMALY_FLAGS, median
from sdc.sentinel.comm import Collectives, PendingMax
from sdc.sentinel.losses import PendingLosses
from sdc.sentinel.reporting import Reporter
from sdc.sentinel.state import StepState
from sdc.sentinel.vote import Suspect

log = logging.getLogger(__name__)

# How many reduced gradients the finiteness probe reads: the first and last halves in model
# order. A non-finite value in the forward pass or the loss reaches the loss gradient and,
# through backward, every gradient upstream of it, so the first parameters (the first layers:
# upstream of everything) and the last (the head: next to the loss) carry it.
PROBE_TENSORS = 32
# Longest row of a weight gradient the probe reads whole (a few pages); a longer one is cut.
PROBE_ROW = 4096


def reduced_by_ddp(model: torch.nn.Module, comm: Collectives) -> bool:
    """Whether ``model`` is a DDP wrapper reducing over exactly the sentinel's group: then the
    gradients at ``on_grads_ready`` are the same all-reduce on every rank."""
    if not isinstance(model, torch.nn.parallel.DistributedDataParallel) or not comm.active:
        return False
    try:
        return list(dist.get_process_group_ranks(model.process_group)) == list(comm.ranks)
    except Exception:  # an unusual group: keep the per-step exchange
        return False


# How the probe reads one gradient, decided from its parameter's shape once.
_WHOLE, _ROW, _CUT_ROW, _FLAT_ROW = range(4)


def _count(shape: torch.Size, reading: int) -> int:
    """How many elements from a gradient's start its reading covers (C-contiguous layout)."""
    if reading == _WHOLE:
        return max(1, shape.numel())
    row = shape.numel() // shape[0]
    return row if reading == _ROW else min(row, PROBE_ROW)


def _reading(shape: torch.Size) -> int:
    if len(shape) <= 1:
        return _WHOLE
    if len(shape) == 2:
        return _ROW if shape[1] <= PROBE_ROW else _CUT_ROW
    return _FLAT_ROW


class GradientProbe:
    """A few elements of each of ``PROBE_TENSORS`` gradients that a non-finite value upstream
    cannot miss, read in one host sync.

    For a weight ``W`` of ``y = x Wᵀ`` (or a convolution's), the first row ``dW[0] = dy[:, 0]ᵀ
    x`` sums over every element of the layer's input ``x``, and a NaN times anything, zero
    included, is NaN: a non-finite value anywhere upstream of the layer's input shows there. A
    1-D gradient (bias, norm weight: a sum of ``dy`` over the batch) is read whole: it shows a
    non-finite output gradient, even in one column. Backward spreads a non-finite output
    gradient over whole rows of the input gradients upstream, so every earlier layer's weight
    gradient is non-finite throughout and its first row shows it.

    Why a plan made once: the probe runs on every step right after the backward pass, when the
    caches hold the step's tensors and not the interpreter's code, and every Python-level tensor
    operation costs several times what it does warm. So the tensors are chosen once, each read
    with one view (a row is a contiguous view, no copy), and the views are concatenated and
    reduced in two more operations.
    """

    def __init__(self, params: Sequence[torch.Tensor]):
        chosen = list(params)
        if len(chosen) > PROBE_TENSORS:
            chosen = chosen[: PROBE_TENSORS // 2] + chosen[-(PROBE_TENSORS // 2):]
        self.plan = [(p, _reading(p.shape)) for p in chosen if p.numel()]
        # On the CPU, with sdc's C kernel built: the same elements, read by one call per dtype
        # from the gradients' addresses (a gradient has its parameter's device and dtype).
        self.native: list[tuple[list[torch.Tensor], native.MagnitudeProbe]] = []
        if self.plan and native.magnitude_available() and all(
                p.device.type == "cpu" and p.dtype in native.MAGNITUDE_DTYPES for p, _ in self.plan):
            by_dtype: dict[torch.dtype, list[tuple[torch.Tensor, int]]] = {}
            for p, reading in self.plan:
                by_dtype.setdefault(p.dtype, []).append((p, _count(p.shape, reading)))
            self.native = [([p for p, _ in entries], native.MagnitudeProbe(dtype, [n for _, n in entries]))
                           for dtype, entries in by_dtype.items()]

    def views(self) -> list[torch.Tensor]:
        views = []
        for param, reading in self.plan:
            g = param.grad
            if g is None:
                continue
            if reading == _ROW:
                views.append(g[0])
            elif reading == _WHOLE:
                views.append(g.reshape(-1) if g.dim() == 0 else g)
            elif reading == _CUT_ROW:
                views.append(g[0, :PROBE_ROW])
            else:
                views.append(g.flatten(1)[0, :PROBE_ROW])
        return views

    def _native_magnitude(self) -> float | None:
        """The C kernel's reading, or None where a gradient is laid out unlike its parameter
        (then its first elements in memory are not its first row)."""
        largest, seen = 0.0, False
        for params, probe in self.native:
            addresses = []
            for p in params:
                g = p.grad
                if g is None:
                    addresses.append(0)
                elif not g.is_contiguous():
                    return None
                else:
                    addresses.append(g.data_ptr())
                    seen = True
            value = probe(addresses)
            if not value <= largest:  # larger, or NaN (which must win)
                largest = value
                if value != value:
                    break
        return largest if seen else None

    def magnitude(self) -> float | None:
        """The largest magnitude in the sampled reduced gradients (NaN or Inf if any is not
        finite: ``max`` propagates NaN); None without gradients. One host read, the same value
        on every rank when the gradients are all-reduced."""
        if self.native:
            value = self._native_magnitude()
            if value is not None or not any(p.grad is not None for p, _ in self.plan):
                return value
        views = self.views()
        if not views:
            return None
        return float(torch.linalg.vector_norm(torch.cat(views), float("inf")))  # max |g|; cat promotes mixed dtypes


class GradProbe:
    """Decides from the probe's magnitude, identically on every rank, whether to look for an
    origin: a non-finite value, or a jump by ``SPIKE_FACTOR`` over the median of the last
    ``WINDOW`` probes. A jump that no rank's flags explain costs one exchange, never an alarm."""

    SPIKE_FACTOR = 1000.0
    WINDOW = 32
    WARMUP = 4
    # The median is taken anew after this many new values (not on every step: it is the one
    # sort the every-step path would do, and a median of 32 barely moves in 8 steps).
    REFRESH = 8

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=self.WINDOW)
        self._bar = float("inf")  # SPIKE_FACTOR x the median; inf while warming up
        self._stale = 0

    def fires(self, magnitude: float | None) -> tuple[bool, bool]:
        """(look for the origin, the gradients are not finite)."""
        if magnitude is None:
            return False, False
        if not math.isfinite(magnitude):
            return True, True
        spike = magnitude > self._bar
        if not spike:
            self.recent.append(magnitude)
            self._stale += 1
            if len(self.recent) == self.WARMUP or (len(self.recent) > self.WARMUP and self._stale >= self.REFRESH):
                middle = median(self.recent)
                self._bar = self.SPIKE_FACTOR * middle if middle > 0 else float("inf")
                self._stale = 0
        return spike, False


class FlagExchange:
    """The loss bookkeeping of one rank's steps and the route its flags take (see module doc).

    Args:
        comm: the group's collectives.
        losses: the rank's losses, kept on the device until read.
        reduced: the gradients seen at ``on_grads_ready`` are every rank's all-reduced (DDP,
            or one replica): probe them instead of exchanging flags on every step.
        reporter: where this rank's events go.
        me: this rank as a suspect, for an anomaly seen by it alone.
    """

    def __init__(self, comm: Collectives, losses: PendingLosses, reduced: bool, reporter: Reporter, me: Suspect):
        self.comm, self.losses, self.reduced, self.reporter, self.me = comm, losses, reduced, reporter, me
        self.shared: set[int] = set()  # steps whose flags every rank has seen
        self.probe = GradProbe()
        self.gradients: GradientProbe | None = None  # planned on the first settle, over the sentinel's parameters
        self._planned_for: Sequence[torch.Tensor] | None = None
        self.begin()

    def begin(self) -> None:
        self._work: PendingMax | None = None
        self._device_flags: torch.Tensor | None = None

    def on_loss(self, state: StepState, loss: torch.Tensor, flags_step: bool) -> None:
        state.loss = loss.detach()
        self.losses.add(state.step, state.loss)
        if self.losses.full:
            self.read(state)
        if flags_step and not self.reduced:
            self._device_flags = self.losses.device_flags(state.loss)

    def local_only(self, step: int, reasons: list[str], loss: float | None) -> None:
        """Seen on this rank only: no collective, no replay, no action (a lone skip or raise
        would split the replicas)."""
        log.warning("sdc sentinel: step %s: local %s on this rank (not replayed: its flags were not exchanged)", step, reasons)
        self.reporter.emit(step, "local_check", "unattributed", (self.me,),
                           {"reasons": reasons, "replayed": False, "local_only": True, "loss": loss})

    def read(self, state: StepState, final: bool = False) -> None:
        """Read the pending losses: the current step's anomaly becomes this step's flags; an
        earlier step's that no rank shared is recorded as this rank's alone (too late now to
        bring the others to a replay). ``final``: the current step is over too (close)."""
        for reading in self.losses.read():
            if reading.step == state.step and not final:
                state.loss_value = reading.value
                if reading.anomaly:
                    state.flags |= ANOMALY_FLAGS[reading.anomaly]
            elif reading.anomaly and reading.step not in self.shared:
                self.local_only(reading.step, [reading.anomaly], reading.value)
        self.shared = {s for s in self.shared if s >= state.step}

    def launch(self, state: StepState) -> None:
        """Sharded gradients: start the async all-reduce of this step's flags (every rank)."""
        if self._work is None:
            local = torch.tensor([state.flags, int(state.error)], dtype=torch.int64)
            if self._device_flags is not None:
                local = local.to(self._device_flags.device)
                local[0] = local[0] | self._device_flags
            self._work = self.comm.max_async(local)

    def settle(self, state: StepState, params: Sequence[torch.Tensor], exchange: bool) -> tuple[int, int, int]:
        """At ``on_grads_ready`` of a flags step: (any rank's flags, any rank's error flag,
        whether every rank must now look for an origin: 0 no, 1 the reduced gradients are not
        finite, 2 they jumped). ``exchange``: this step's periodic exchange carries the flags."""
        if self.reduced:
            if exchange:
                self.shared.add(state.step)
                return 0, 0, 0
            if self.gradients is None or self._planned_for is not params:
                self.gradients, self._planned_for = GradientProbe(params), params
            look, nonfinite = self.probe.fires(self.gradients.magnitude())
            if not look:
                return 0, 0, 0  # a local-only anomaly of this step is reported when read
            self.shared.add(state.step)
            self.read(state)  # this rank's own loss flags, for the exchange that follows
            return 0, 0, 1 if nonfinite else 2
        self.shared.add(state.step)
        self.launch(state)  # normally already done by on_loss
        early = self._work.wait()
        self._work = None
        if early[0] and self._device_flags is not None:
            # Some rank raised a flag: now this rank's own flags and loss are worth a sync.
            state.flags |= int(self._device_flags)
            if state.loss_value is None and state.loss is not None:
                state.loss_value = float(state.loss.reshape(()).float())
        return early[0], early[1], 0
