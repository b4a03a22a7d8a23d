"""Transfer probes: host-to-device and back, checked for integrity and timed for bandwidth.

A seeded host buffer (pinned where the backend supports it) goes to the device and back into
buffers allocated beforehand (pinned likewise);
the returned bytes must equal the sent ones exactly (the reference digest is the source's).
Throughput is the round trip's bytes over its time, in GB/s; the two directions' own figures
are in the message. On the CPU "device" both copies are plain memory copies, so virtual
chips exercise the same path. Deterministic: judged bit for bit.
"""

from __future__ import annotations

import torch

from probes.base import Case, Outcome, Probe
from probes.harness import (
    DeviceTimer,
    DistinctOutputs,
    Repeats,
    bit_equal,
    judge,
    randn,
    timed_fault_stretch,
)
from probes.sizing import host_seconds, sized, transfer_bandwidth
from sdc.digest import digest


class TransferProbe(Probe):
    name = "transfer"
    version = 1

    def cases(self, suite: str) -> list[Case]:
        mib = {"quick": 2, "standard": 256}.get(suite)
        return [Case("roundtrip", (mib * (1 << 20) // 4,), "fp32", {"mib": mib})] if mib else []

    def cases_for(self, suite: str, device: torch.device) -> list[Case]:
        base = self.cases(suite)
        if not base:
            return base
        mib = 256 if suite == "quick" else 1024  # the host-side digest of the round trip is the cost
        large = [Case("roundtrip", (mib * (1 << 20) // 4,), "fp32", {"mib": mib})]
        return base + sized(device, large, lambda case: self.estimate_s(case, device), lambda case: 8.0 * case.shape[0])

    def estimate_s(self, case: Case, device: torch.device) -> float:
        return 0.05 + 3 * 2 * case.shape[0] * 4 / transfer_bandwidth(device, cpu=5e9) + host_seconds(device, case.shape[0])

    def run(self, case: Case, device: torch.device, seed: int, repeats: int, faults=None) -> Outcome:
        source = randn(case.shape, seed, "transfer", case.shape)
        pinned = device.type == "cuda"
        if pinned:
            source = source.pin_memory()
        # Both copies land in buffers allocated (and touched) before the clock starts: a fresh
        # pageable tensor per copy measured page faults and staging, not the link (an H200
        # read 1.5 GB/s device-to-host that way, against 53 GB/s host-to-device).
        landing = [torch.zeros_like(source, pin_memory=pinned) for _ in range(2)]  # first answer, later ones
        on_device = torch.zeros_like(source, device=device)  # a real copy on the CPU "device" too
        outputs, timings = DistinctOutputs(), []
        h2d_best = d2h_best = float("inf")
        timer = DeviceTimer(device)
        for repeat in range(max(1, repeats)):
            if faults:
                faults.before(self.name, case.name)
            back = landing[0 if outputs.first is None else 1]
            # Device events on the copy's stream where the backend has them: the link's time,
            # not the host's launch and synchronize latency.
            timer.start()
            on_device.copy_(source)
            h2d = timer.stop()
            timer.start()
            back.copy_(on_device)
            d2h = timer.stop()
            elapsed = timed_fault_stretch(faults, self.name, case.name, h2d + d2h)
            if faults:
                back = faults.corrupt(back, self.name, case.name, repeat)
            h2d_best, d2h_best = min(h2d_best, h2d), min(d2h_best, d2h)
            timings.append(elapsed)
            outputs.add(back)
        first, digests = outputs.first, outputs.digests
        assert first is not None
        result = Repeats(first=first, digests=digests, timings=timings, distinct=len(digests), clock=timer.clock)
        if bit_equal(first, source):  # the usual case, decided by one memcmp
            outcome = Outcome(status="ok", repeats=len(timings), distinct_repeat_digests=result.distinct,
                              timings=timings, digest=digests[0], max_abs_err=0.0, max_rel_err=0.0, error_bound=0.0)
            if result.distinct > 1:
                outcome.status, outcome.message = "mismatch", f"{result.distinct} distinct outputs over {len(timings)} repeats"
        else:
            # The exact source is the reference: any difference at all exceeds the zero bound.
            outcome = judge(result, source.to(torch.float64), 0.0)
        nbytes = source.numel() * source.element_size()
        outcome.throughput, outcome.throughput_unit = 2 * nbytes / min(timings) / 1e9, "GB/s"
        detail = f"host-to-device {nbytes / h2d_best / 1e9:.1f} GB/s, device-to-host {nbytes / d2h_best / 1e9:.1f} GB/s"
        outcome.message = f"{outcome.message}; {detail}" if outcome.message else detail
        outcome.reference_digest = digest(source)
        outcome.telemetry["timing_clock"] = timer.clock
        return outcome


PROBES = (TransferProbe,)
