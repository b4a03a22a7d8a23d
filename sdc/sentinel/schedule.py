"""CheckSchedule: at which steps the sentinel's periodic checks run — local-gradient digests,
reduced-gradient digests, parameter and optimizer-state digests, recompute audits, GEMM
checksums — under one cost budget that all of them share, agreed across ranks.

Why one budget: what each check costs relative to a training step depends on the machine. On
an accelerator the digests run at memory bandwidth and an audit of a 2-row slice is a sliver
of a compute-bound step, so every check fits at its base period (``grad_every`` ...). On a CPU
a digest pass over the model is a few percent of a step and an audit most of one. A budget
per check would let their sum exceed the target; one budget for all keeps the whole sentinel
inside it, and stretching every period by the same factor keeps checks that share a base
period on the same steps (one *check cycle*: what certification waits for).

The rule, after each check step::

    s = sum over kinds k of cost_k / base_k  /  (allowance x step time)
    period_k = max(base_k, min(cap, ceil(base_k x s)))

``cost_k`` is the last measured cost of check kind k (host wall time; on an accelerator the
device is synchronized around it, on check steps only; a kind's first run, which pays one-time
costs, is not learnt), the step time the median wall time of
the last ``STEP_WINDOW`` steps (a median: a pause between steps — evaluation, a checkpoint —
does not make the steps look slower and the checks cheaper), and the allowance the budget
less the share the sentinel's every-step work takes (its mean on steps without a periodic
check; at least ``CHECK_FLOOR`` of the budget is left to the checks: where the every-step work
alone takes more, the checks still run, and the time cap bounds how rarely). The cap bounds how late a
fault can be named, even where the budget would stretch the period further (there the budget
gives way): ``max_seconds`` of wall time at the median step time (``max_check_seconds``,
default 300 s: a time, because what a late detection wastes is chip-hours, and 200 steps are
4 s of a small CPU job but an hour of a large model's), and optionally ``cap`` steps
(``max_check_period``). The ranks agree on the largest ``s`` and the smallest step-time cap
in one all-reduce of two int64s per check step, so every rank runs the same checks at the
same steps. ``budget=0``: each check exactly every ``base_k`` steps (``step % base_k == 0``), no
agreement.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections import deque
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import torch

from sdc.node.devices import synchronize
from sdc.sentinel.comm import Collectives

KINDS = ("local", "grads", "params", "audit", "gemm")
# How many recent steps the step time (and the every-step work) is the median of.
STEP_WINDOW = 32
# The stretch factor travels as an integer number of thousandths.
SCALE = 1000
# The share of the budget the periodic checks keep however much the every-step work takes: a
# tenth, so that the sentinel's total stays within the budget while its every-step work is
# up to nine tenths of it (a short CPU step), and still has checks to run beyond that.
CHECK_FLOOR = 0.1
# "No cap on the period" as the ranks exchange it (an int64 above any real step count).
NO_CAP = 1 << 62


def counted(hook: Callable) -> Callable:
    """Marks a sentinel hook whose time counts against the budget (its ``schedule.inside``)."""
    @functools.wraps(hook)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return hook(self, *args, **kwargs)
        finally:
            self.schedule.inside(time.perf_counter() - started)
    return run


def stretch_for(costs: Mapping[str, float], every: Mapping[str, int], allowance: float, step_seconds: float) -> float:
    """The factor by which every base period must grow for the checks to cost ``allowance``
    of the training time (at least 1: a check never runs more often than its base period)."""
    if allowance <= 0 or step_seconds <= 0:
        return 1.0
    per_step = sum(costs.get(k, 0.0) / n for k, n in every.items() if n > 0)
    return max(1.0, per_step / (allowance * step_seconds))


def steps_within(seconds: float, step_seconds: float) -> int:
    """How many steps of ``step_seconds`` fit in ``seconds`` (0: no bound: either is unknown or off)."""
    if seconds <= 0 or step_seconds <= 0:
        return 0
    return max(1, int(seconds / step_seconds + 1e-9))  # 3.0 / 0.1 is 29.999...


def period_for(every: int, stretch: float, cap: int) -> int:
    """Steps between two checks of base period ``every`` under ``stretch``, at most ``cap``
    (0: no cap) unless the base period itself is longer."""
    stretched = math.ceil(every * stretch - 1e-9)
    if cap > 0:
        stretched = min(stretched, cap)
    return max(every, stretched)


class CheckSchedule:
    """Decides, identically on every rank, which periodic checks a step runs.

    Args:
        every: base period of each check kind (``KINDS``; 0: never).
        budget: share of the training time all periodic checks together may take (0: run
            each exactly at its base period).
        cap: the longest period, in steps, the budget may stretch a check to (0: none).
        device: the model's device (synchronized around a cost measurement off the CPU).
        max_seconds: the longest period in wall time at the median step time (0: none).
    """

    def __init__(self, every: Mapping[str, int], budget: float, cap: int, device: torch.device | None = None,
                 max_seconds: float = 0.0):
        self.every = {k: int(every.get(k, 0)) for k in KINDS}
        self.budget, self.cap, self.max_seconds = float(budget), int(cap), float(max_seconds)
        self.active = tuple(k for k in KINDS if self.every[k] > 0)
        self.device = device or torch.device("cpu")
        self.stretch = 1.0
        self.period = {k: self.every[k] for k in self.active}  # as the ranks last agreed (kinds that are on)
        self.next = {k: 0 for k in KINDS}  # first step each kind may run at
        self.upcoming: dict[str, int] = {}  # agreed at this step, applied when it ends
        self.costs: dict[str, float] = {}  # last measured seconds per kind
        self._measured: dict[str, float] = {}  # this step's measurements so far
        self._step_times: deque[float] = deque(maxlen=STEP_WINDOW)
        self._every_step: deque[float] = deque(maxlen=STEP_WINDOW)  # sentinel time of steps without a periodic check
        self._inside = 0.0
        self._last_end: float | None = None
        self._agreed: int | None = None
        self._warm: set[str] = set()
        self._first_due = 0 if self.active else NO_CAP  # the earliest step any kind is due (budgeted schedule)

    # ------------------------------------------------------------------ decisions

    def due(self, kind: str, step: int) -> bool:
        every = self.every.get(kind, 0)
        if every <= 0:
            return False
        if self.budget <= 0:
            return step % every == 0
        return step >= self.next[kind]

    def due_kinds(self, step: int) -> list[str]:
        return [k for k in self.active if self.due(k, step)]

    def quiet(self, step: int) -> bool:
        """No periodic check is due at ``step``: the hooks take their short path."""
        if self.budget > 0:
            return step < self._first_due
        return not any(step % self.every[k] == 0 for k in self.active)

    def next_step(self, kind: str, step: int) -> int:
        """The step the next check of ``kind`` is due after one run at ``step``."""
        if kind in self.upcoming:
            return self.upcoming[kind]
        return step + self.period[kind] if self.budget > 0 else (step // self.every[kind] + 1) * self.every[kind]

    def details(self, kind: str, step: int) -> dict:
        """What a check's event says about when it runs (its period as the sentinel uses it)."""
        return {"check_period": self.period[kind], "next_check_step": self.next_step(kind, step)}

    # ------------------------------------------------------------------ measurements

    @property
    def step_seconds(self) -> float:
        """The median wall time of the recent training steps (0 before any was seen)."""
        return statistics.median(self._step_times) if self._step_times else 0.0

    @property
    def every_step_share(self) -> float:
        """The share of a step the sentinel takes on steps without a periodic check (a mean:
        costs add up, and a rare slow hook is as much a cost as a steady one)."""
        if not self._every_step or self.step_seconds <= 0:
            return 0.0
        return statistics.fmean(self._every_step) / self.step_seconds

    def inside(self, seconds: float) -> None:
        """Time spent in one of the sentinel's hooks this step."""
        self._inside += seconds

    @contextmanager
    def measure(self, kind: str, sync: bool = True) -> Iterator[None]:
        """Time one periodic check's work (added up over the step). ``sync``: wait for the
        device before and after, so the time is the device's (check steps only)."""
        if sync:
            synchronize(self.device)
        started = time.perf_counter()
        try:
            yield
        finally:
            if sync:
                synchronize(self.device)
            self._measured[kind] = self._measured.get(kind, 0.0) + time.perf_counter() - started

    def allowance(self) -> float:
        return max(self.budget - self.every_step_share, self.budget * CHECK_FLOOR)

    # ------------------------------------------------------------------ agreement

    def agree(self, comm: Collectives, step: int) -> None:
        """On a step where some periodic check is due: agree with every rank on the next
        periods. Entered by every rank at the same steps (``due`` is the same everywhere), once
        per step: the sentinel calls it first thing in ``on_grads_ready`` and ``on_step_end``,
        before anything that could fail on one rank."""
        if self.budget <= 0 or self._agreed == step or self.quiet(step):
            return
        ran = self.due_kinds(step)
        self._agreed = step  # once per step, whichever hook comes first
        try:
            proposal = math.ceil(SCALE * stretch_for(self.costs, self.every, self.allowance(), self.step_seconds))
            within = steps_within(self.max_seconds, self.step_seconds) or NO_CAP
        except Exception:  # a local failure must not skip the all-reduce the others enter
            proposal, within = SCALE, NO_CAP
        # MAX of the stretch, and MAX of the time cap's complement: the smallest cap (the
        # fastest-stepping rank's, so that none of them names a fault later than the cap).
        agreed, inverse = comm.max_(torch.tensor([proposal, ~within], dtype=torch.int64)).tolist()
        self.stretch = max(1.0, int(agreed) / SCALE)
        within = ~int(inverse)
        cap = min(self.cap or NO_CAP, within)
        cap = 0 if cap >= NO_CAP else cap
        for kind in self.active:
            self.period[kind] = period_for(self.every[kind], self.stretch, cap)
        self.upcoming = {kind: step + self.period[kind] for kind in ran}

    def end_step(self, step: int) -> None:
        """The step is over: apply the agreed next steps, learn its costs and wall time."""
        now = time.perf_counter()
        if self._last_end is not None:
            self._step_times.append(now - self._last_end)
        self._last_end = now
        if self._measured:
            # A kind's first run pays one-time costs (allocations, kernel builds, the first
            # deterministic-mode switch): learnt from its second run on.
            self.costs.update({k: v for k, v in self._measured.items() if k in self._warm})
            self._warm |= set(self._measured)
        elif self.quiet(step):
            self._every_step.append(self._inside)
        if self.upcoming:
            self.next.update(self.upcoming)
            self._first_due = min((self.next[k] for k in self.active), default=NO_CAP)
            self.upcoming = {}
        self._measured, self._inside = {}, 0.0
