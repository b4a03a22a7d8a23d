"""Memory probes: pattern tests over device memory, reporting failing address ranges, and bandwidth.

Patterns, over 32-bit words of one buffer:

- walking ones / walking zeros: every word holds ``1 << b`` (then its complement) for each
  bit b: a stuck or coupled bit line shows in the pass of its bit;
- moving inversions: fill with a pattern, then block by block ascending check it and write its
  complement, then descending check the complement and restore: catches address-order faults;
- own address: every word holds its index mixed with a seeded mask: catches aliased addresses.

The buffer is ``params["mib"]`` MiB, or on accelerators whose free memory torch exposes
(``mem_get_info`` of the backend's module, ``torch.accelerator``) ``params["share"]`` of it,
when the passes fit the sizing allowance at the device's measured bandwidth (the cohort key
holds the share, not the byte count); elsewhere the fixed-size case. Failing words are reported as
byte-offset ranges from the buffer start, with the buffer's device address. The output
digested for the cohort is the count of failing words per pattern (zeros on a healthy chip).
"""

from __future__ import annotations

import torch

from probes.base import Case, Outcome, Probe
from probes.harness import DeviceTimer, generator, timed_fault_stretch
from probes.sizing import sized, stream_bandwidth
from sdc.node.devices import device_memory

BLOCKS = 16
MAX_RANGES = 8


PASS_COUNT = 140  # buffer-sized reads and writes of all the patterns together


def buffer_words(case: Case, device: torch.device) -> int:
    if "share" in case.params:
        free, _ = device_memory(device)
        if free is not None:
            return max(1 << 20, int(free * float(case.params["share"])) // 4 // BLOCKS * BLOCKS)
    return int(float(case.params.get("mib", 8)) * (1 << 20)) // 4 // BLOCKS * BLOCKS


def failing_ranges(indices: torch.Tensor, word_bytes: int = 4) -> list[tuple[int, int]]:
    """Merge sorted failing word indices into byte ranges [start, end)."""
    ranges: list[tuple[int, int]] = []
    for index in indices.tolist():
        start = index * word_bytes
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], start + word_bytes)
        else:
            ranges.append((start, start + word_bytes))
    return ranges


class _Tester:
    """Runs the patterns on one buffer, counting failing words and remembering where."""

    def __init__(self, words: int, device: torch.device, seed: int, corrupt, failures: set[int]):
        self.buffer = torch.empty(words, dtype=torch.int32, device=device)
        self.corrupt = corrupt  # injected faults act on what is read back
        self.mask = int(torch.randint(0, 2**31 - 1, (1,), generator=generator(seed, "memory-mask")))
        self.failures = failures
        self.bytes_moved = 0

    def _check(self, region: torch.Tensor, expected, offset: int = 0) -> int:
        readback = self.corrupt(region)
        bad = readback != expected
        self.bytes_moved += region.numel() * 4
        count = int(torch.count_nonzero(bad))
        if count:
            self.failures.update((bad.nonzero().reshape(-1)[: MAX_RANGES * 64] + offset).tolist())
        return count

    def _fill(self, region: torch.Tensor, value) -> None:
        region.copy_(value) if isinstance(value, torch.Tensor) else region.fill_(value)
        self.bytes_moved += region.numel() * 4

    def walking(self, invert: bool) -> int:
        errors = 0
        for bit in range(32):
            value = torch.tensor(1 << bit, dtype=torch.int64).to(torch.int32).item()
            value = ~value if invert else value
            self._fill(self.buffer, value)
            errors += self._check(self.buffer, value)
        return errors

    def moving_inversions(self) -> int:
        blocks = self.buffer.view(BLOCKS, -1)
        pattern, inverse = 0x55555555, ~0x55555555
        self._fill(self.buffer, pattern)
        errors = 0
        for i in range(BLOCKS):
            errors += self._check(blocks[i], pattern, i * blocks.shape[1])
            self._fill(blocks[i], inverse)
        for i in reversed(range(BLOCKS)):
            errors += self._check(blocks[i], inverse, i * blocks.shape[1])
            self._fill(blocks[i], pattern)
        return errors

    def own_address(self) -> int:
        """Each word holds its index (modulo 2**31) xor the mask; block by block, so buffers of
        more than 2**31 words need no int64 index tensor."""
        blocks = self.buffer.view(BLOCKS, -1)
        width = blocks.shape[1]
        errors = 0
        for i in range(BLOCKS):
            # int32 arithmetic wraps; masking the sign bit makes the index modulo 2**31.
            offset = (i * width) % (1 << 31)
            expected = ((torch.arange(width, dtype=torch.int32, device=self.buffer.device) + offset) & 0x7FFFFFFF) ^ self.mask
            self._fill(blocks[i], expected)
        for i in range(BLOCKS):
            offset = (i * width) % (1 << 31)
            expected = ((torch.arange(width, dtype=torch.int32, device=self.buffer.device) + offset) & 0x7FFFFFFF) ^ self.mask
            errors += self._check(blocks[i], expected, i * width)
        return errors


class MemoryProbe(Probe):
    name = "memory"
    version = 1

    def cases(self, suite: str) -> list[Case]:
        mib = {"quick": 0.25, "standard": 64}.get(suite)
        return [Case("patterns", (), "int32", {"mib": mib})] if mib else []

    def cases_for(self, suite: str, device: torch.device) -> list[Case]:
        base = self.cases(suite)
        if not base or device_memory(device)[0] is None:
            return base  # no figure for the device's memory: the fixed-size buffer
        share = Case("patterns", (), "int32", {"share": 0.05 if suite == "quick" else 0.5})
        return sized(device, [share], lambda case: self.estimate_s(case, device)) or base

    def estimate_s(self, case: Case, device: torch.device) -> float:
        nbytes = buffer_words(case, device) * 4
        return 0.05 + 3 * PASS_COUNT * nbytes / stream_bandwidth(device, cpu=3e9)

    def run(self, case: Case, device: torch.device, seed: int, repeats: int, faults=None) -> Outcome:
        words = buffer_words(case, device)
        counts_seen: list[torch.Tensor] = []
        timings: list[float] = []
        tester = None
        failures: set[int] = set()
        for repeat in range(max(1, repeats)):
            if faults:
                faults.before(self.name, case.name)

            def corrupt(region, repeat=repeat):
                return faults.corrupt(region, self.name, case.name, repeat) if faults else region

            tester = _Tester(words, device, seed, corrupt, failures)
            timer = DeviceTimer(device)  # device events where the backend has them, else wall clock
            timer.start()
            counts = torch.tensor([tester.walking(False), tester.walking(True), tester.moving_inversions(), tester.own_address()])
            timings.append(timed_fault_stretch(faults, self.name, case.name, timer.stop()))
            counts_seen.append(counts)
        assert tester is not None
        from sdc.digest import digest

        total = int(sum(int(c.sum()) for c in counts_seen))
        distinct = len({tuple(c.tolist()) for c in counts_seen})
        outcome = Outcome(
            status="ok" if total == 0 else "mismatch",
            repeats=len(timings),
            distinct_repeat_digests=distinct,
            timings=timings,
            digest=digest(counts_seen[0]),
            reference_digest=digest(torch.zeros(4, dtype=torch.int64)),
            max_abs_err=float(total),
            error_bound=0.0,
            throughput=tester.bytes_moved / min(timings) / 1e9,
            throughput_unit="GB/s",
            telemetry={"timing_clock": timer.clock},
        )
        if total:
            ranges = failing_ranges(torch.tensor(sorted(failures)))
            shown = ", ".join(f"[0x{a:x}, 0x{b:x})" for a, b in ranges[:MAX_RANGES])
            more = f" and {len(ranges) - MAX_RANGES} more" if len(ranges) > MAX_RANGES else ""
            names = ("walking ones", "walking zeros", "moving inversions", "own address")
            which = ", ".join(n for n, c in zip(names, counts_seen[-1].tolist()) if c) or "earlier repeats"
            outcome.message = (
                f"{total} failing words ({which}); byte ranges from buffer 0x{tester.buffer.data_ptr():x} "
                f"of {words * 4} bytes: {shown}{more}"
            )
        return outcome


PROBES = (MemoryProbe,)
