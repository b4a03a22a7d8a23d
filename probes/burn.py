"""Burn probe: GEMM at full power for a set duration, every iteration compared with the first.

Sustained load finds what a short probe does not: faults that appear once a chip is hot,
its clocks move or its power is capped. The same seeded GEMM runs back to back for
``params["duration_s"]`` seconds (``sdc sweep --suite burn --duration``); each output is
compared bit for bit with the first (a memcmp on the device, cheap next to the GEMM) and
the first is judged against the fp64 reference on sampled rows.

Timing covers the whole burn in bounded memory: the burn is cut into ``INTERVALS`` equal
spans of time, each keeping a running median estimate of its iterations' device time, and
the timings kept in the record are a thinned sample spread evenly over the burn (not its
first iterations). The reported throughput is the *sustained* one — the slowest interval's
median — so a chip that throttles after two minutes is slow in the slow analysis; the
telemetry's ``burn`` entry has every interval's median, the slowest interval and the ratio
of the last interval to the first.
"""

from __future__ import annotations

import time

import torch

from probes.base import Case, Outcome, Probe
from probes.gemm import GemmProbe, check_supported, host_inputs, matmul
from probes.harness import DeviceTimer, Repeats, bit_equal, timed_fault_stretch
from probes.sizing import sized
from sdc.digest import digest

MAX_TIMINGS = 2000  # timings kept in the record, spread over the whole burn
INTERVALS = 10  # spans of the burn with a median each
PER_INTERVAL = 4096  # timings an interval keeps for its median (every k-th beyond that)


class Thinned:
    """At most ``limit`` values spread evenly over a stream: keeps every k-th, doubling k when full."""

    def __init__(self, limit: int):
        self.limit, self.step, self.seen, self.values = limit, 1, 0, []

    def add(self, value: float) -> None:
        if self.seen % self.step == 0:
            self.values.append(value)
            if len(self.values) >= self.limit:
                self.values = self.values[::2]
                self.step *= 2
        self.seen += 1


def burn_statistics(intervals: list[Thinned]) -> dict:
    """Per-interval medians, the slowest interval, and the last interval against the first."""
    medians = [sorted(t.values)[len(t.values) // 2] if t.values else None for t in intervals]
    known = [(i, m) for i, m in enumerate(medians) if m is not None]
    slowest = max(known, key=lambda im: im[1])[0]
    first, last = known[0][1], known[-1][1]
    return {"interval_median_s": medians, "slowest_interval": slowest, "last_vs_first": last / first if first > 0 else None,
            "iterations_per_interval": [t.seen for t in intervals]}


class BurnProbe(Probe):
    name = "burn"
    version = 2  # v2: sustained throughput (slowest interval's median), timings over the whole burn
    duration_s: float = 60.0  # set from ``sdc sweep --duration``

    def cases(self, suite: str) -> list[Case]:
        if suite != "burn":
            return []
        return [Case("gemm", (512, 512, 512), "fp32", {"duration_s": float(self.duration_s)})]

    def cases_for(self, suite: str, device: torch.device) -> list[Case]:
        base = self.cases(suite)
        if not base:
            return base
        # The large GEMM when one iteration of it (and its fp64 check) takes a fraction of
        # the allowance on this device; a slow chip burns with the small one.
        large = Case("gemm", (8192, 8192, 8192), "bf16", {"duration_s": float(self.duration_s)})
        one_iteration = GemmProbe().estimate_s(Case("square", large.shape, large.dtype), device) / 3
        return sized(device, [large], lambda _: one_iteration * 3) or base

    def estimate_s(self, case: Case, device: torch.device) -> float:
        return float(case.params.get("duration_s", self.duration_s)) + 1.0

    def timeout_s(self, case: Case) -> float:
        return float(case.params.get("duration_s", self.duration_s)) * 1.5 + 60.0

    def run(self, case: Case, device: torch.device, seed: int, repeats: int, faults=None) -> Outcome:
        check_supported(case.dtype, device)
        duration = float(case.params.get("duration_s", self.duration_s))
        gemm_case = Case("burn", case.shape, case.dtype)
        # Judge the first iteration exactly as the GEMM probe would (same reference, cached).
        a_host, b_host = host_inputs(gemm_case, seed)
        a, b = a_host[0].to(device), b_host[0].to(device)
        first = None
        kept = Thinned(MAX_TIMINGS)
        intervals = [Thinned(PER_INTERVAL) for _ in range(INTERVALS)]
        fastest = float("inf")
        distinct: list[torch.Tensor] = []
        digests: list[str] = []
        iterations = differing = 0
        timer = DeviceTimer(device)
        began = time.perf_counter()
        deadline = began + duration
        while iterations == 0 or time.perf_counter() < deadline:
            if faults:
                faults.before(self.name, case.name)
            timer.start()
            out = matmul(a, b, case.dtype)
            elapsed = timed_fault_stretch(faults, self.name, case.name, timer.stop())
            if faults:
                out = faults.corrupt(out, self.name, case.name, iterations)
            kept.add(elapsed)
            span = min(INTERVALS - 1, int((time.perf_counter() - began) / max(duration, 1e-9) * INTERVALS))
            intervals[span].add(elapsed)
            fastest = min(fastest, elapsed)
            if first is None:
                first = out
                distinct.append(out)
                digests.append(digest(out))
            elif not bit_equal(out, first):
                differing += 1
                # Up to 16 distinct outputs are kept: enough to prove inconsistency, bounded memory.
                if len(distinct) < 16 and not any(bit_equal(out, seen) for seen in distinct[1:]):
                    distinct.append(out)
                    digests.append(digest(out))
            iterations += 1
        assert first is not None
        outcome = GemmProbe().judge_output(gemm_case, seed, Repeats(first, digests, kept.values, len(distinct), clock=timer.clock))
        outcome.repeats = iterations
        stats = burn_statistics(intervals)
        stats["timing_clock"] = timer.clock
        outcome.telemetry["burn"] = stats
        m, n, k = case.shape
        work = 2.0 * m * n * k
        sustained = stats["interval_median_s"][stats["slowest_interval"]]
        outcome.throughput, outcome.throughput_unit = work / sustained / 1e12, "TFLOP/s"
        ratio = stats["last_vs_first"]
        note = (f"{iterations} iterations in {duration:.0f} s, {differing} differed from the first; sustained "
                f"{outcome.throughput:.3g} TFLOP/s (slowest interval, {stats['slowest_interval'] + 1} of {INTERVALS}), "
                f"peak {work / fastest / 1e12:.3g}; last interval {ratio:.2f}x the first's time" if ratio else "")
        outcome.message = f"{outcome.message}; {note}" if outcome.message else note
        return outcome


PROBES = (BurnProbe,)
