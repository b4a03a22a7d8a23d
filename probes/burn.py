"""Burn probe: GEMM at full power for a set duration, every iteration compared with the first.

Sustained load finds what a short probe does not: faults that appear once a chip is hot,
its clocks move or its power is capped. The same seeded GEMM runs back to back for
``params["duration_s"]`` seconds (``sdc sweep --suite burn --duration``); each output is
compared bit for bit with the first (a memcmp on the device, cheap next to the GEMM) and
the first is judged against the fp64 reference on sampled rows. Reported: iterations,
distinct outputs, TFLOP/s of the fastest iteration, and how much the slowest one lagged.
"""

from __future__ import annotations

import time

import torch

from probes.base import Case, Outcome, Probe
from probes.gemm import GemmProbe, check_supported, host_inputs, matmul
from probes.harness import Repeats, bit_equal, synchronize
from probes.sizing import sized
from sdc.digest import digest

MAX_TIMINGS = 2000  # per-iteration timings kept in the record (the first ones)


class BurnProbe(Probe):
    name = "burn"
    version = 1
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
        timings: list[float] = []
        distinct: list[torch.Tensor] = []
        digests: list[str] = []
        iterations = differing = 0
        deadline = time.perf_counter() + duration
        while iterations == 0 or time.perf_counter() < deadline:
            if faults:
                faults.before(self.name, case.name)
            synchronize(device)
            start = time.perf_counter()
            out = matmul(a, b, case.dtype)
            synchronize(device)
            elapsed = time.perf_counter() - start
            if faults:
                faults.stretch(self.name, case.name, elapsed)
                elapsed = time.perf_counter() - start
                out = faults.corrupt(out, self.name, case.name, iterations)
            if len(timings) < MAX_TIMINGS:
                timings.append(elapsed)
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
        outcome = GemmProbe().judge_output(gemm_case, seed, Repeats(first, digests, timings, len(distinct)))
        outcome.repeats = iterations
        m, n, k = case.shape
        outcome.throughput, outcome.throughput_unit = 2.0 * m * n * k / min(timings) / 1e12, "TFLOP/s"
        lag = max(timings) / min(timings)
        note = f"{iterations} iterations in {duration:.0f} s, {differing} differed from the first; slowest iteration {lag:.2f}x the fastest"
        outcome.message = f"{outcome.message}; {note}" if outcome.message else note
        return outcome


PROBES = (BurnProbe,)
