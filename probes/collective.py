"""Collective probes: all-reduce and all-gather between this chip and its neighbour.

Run on chip d, a case forms a group of ``params["world"]`` ranks on devices d, d+1, ...
(modulo the node's device count) with NCCL/RCCL on GPUs or gloo elsewhere, one thread per
rank in the chip's worker process (c10d process groups built directly on a shared in-memory
store, so no extra processes start). Each rank's input is seeded by its rank; the output of
rank 0 (this chip) is judged against an fp64 reference (all-reduce: within the rounding of
``world`` additions; all-gather: exact) and over repeats. Virtual CPU chips form their
group on the CPU, so the probe runs in CPU-only tests. Throughput is the per-device bus
bandwidth (the NCCL-tests convention): bytes * 2(n-1)/n for all-reduce, bytes * (n-1)/n for
all-gather, over the time.

Determinism: all-reduce with two ranks adds two numbers per element (order does not
matter); with more ranks NCCL's ring order is fixed for a fixed topology. Judged bit for bit.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from probes.base import Case, Outcome, Probe, Unsupported
from probes.harness import UNIT_ROUNDOFF, Repeats, bit_equal, judge, randn, synchronize
from sdc.digest import digest

TIMEOUT = timedelta(seconds=60)


def _group_devices(device: torch.device, world: int) -> list[torch.device]:
    if device.type == "cpu":
        return [device] * world
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if count < world:
        raise Unsupported(f"{world}-rank collectives need {world} devices; this node has {count} {device.type}")
    return [torch.device(device.type, ((device.index or 0) + r) % count) for r in range(world)]


def _process_group(store, rank: int, world: int, device: torch.device):
    if device.type == "cuda" and dist.is_nccl_available():
        options = dist.ProcessGroupNCCL.Options()
        return dist.ProcessGroupNCCL(store, rank, world, options)
    return dist.ProcessGroupGloo(store, rank, world, TIMEOUT)


def _collective(op: str, inputs: list[torch.Tensor], devices: list[torch.device], repeats: int, before, after):
    """Run ``op`` ``repeats`` times on one thread per rank; returns rank 0's outputs and timings."""
    world = len(devices)
    store = dist.HashStore()
    outputs: list[torch.Tensor] = []
    timings: list[float] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(world)

    def rank_main(rank: int) -> None:
        try:
            if devices[rank].type == "cuda":
                torch.cuda.set_device(devices[rank])
            group = _process_group(store, rank, world, devices[rank])
            data = inputs[rank].to(devices[rank])
            for repeat in range(repeats):
                if rank == 0:
                    before()
                barrier.wait()
                synchronize(devices[rank])
                start = time.perf_counter()
                if op == "all_reduce":
                    out = data.clone()
                    group.allreduce([out]).wait()
                else:
                    gathered = [torch.empty_like(data) for _ in range(world)]
                    group.allgather([gathered], [data]).wait()
                    out = torch.cat(gathered)
                synchronize(devices[rank])
                elapsed = time.perf_counter() - start
                if rank == 0:
                    elapsed = after(out, repeat, elapsed, start)
                    outputs.append(out)
                    timings.append(elapsed)
        except BaseException as exc:  # reported to the caller; the other rank times out
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=rank_main, args=(r,), daemon=True) for r in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0] if not isinstance(errors[0], threading.BrokenBarrierError) else errors[-1]
    return outputs, timings


class CollectiveProbe(Probe):
    name = "collective"
    version = 1

    def cases(self, suite: str) -> list[Case]:
        elements = {"quick": 1 << 16, "standard": 1 << 22}.get(suite)
        if elements is None:
            return []
        return [Case(op, (elements,), "fp32", {"op": op, "world": 2}) for op in ("all_reduce", "all_gather")]

    def cases_for(self, suite: str, device: torch.device) -> list[Case]:
        base = self.cases(suite)
        if device.type == "cpu" or not base:
            return base
        return base + [Case(c.name, (1 << 26,), "bf16", dict(c.params)) for c in base]

    def estimate_s(self, case: Case, device: torch.device) -> float:
        return 0.2 + 3 * case.shape[0] * 8 / (2e9 if device.type == "cpu" else 1e11)

    def run(self, case: Case, device: torch.device, seed: int, repeats: int, faults=None) -> Outcome:
        op, world = str(case.params["op"]), int(case.params.get("world", 2))
        devices = _group_devices(device, world)
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[case.dtype]
        inputs = [randn(case.shape, seed, "collective", op, rank, case.shape, dtype=dtype) for rank in range(world)]

        def before() -> None:
            if faults:
                faults.before(self.name, case.name)

        def after(out: torch.Tensor, repeat: int, elapsed: float, start: float) -> float:
            if not faults:
                return elapsed
            faults.stretch(self.name, case.name, elapsed)
            corrupted = faults.corrupt(out, self.name, case.name, repeat)
            if corrupted is not out:
                out.copy_(corrupted)
            return time.perf_counter() - start

        outputs, timings = _collective(op, inputs, devices, max(1, repeats), before, after)
        distinct: list[torch.Tensor] = []
        digests: list[str] = []
        for out in outputs:
            if not any(bit_equal(out, seen) for seen in distinct):
                distinct.append(out)
                digests.append(digest(out))
        result = Repeats(first=outputs[0], digests=digests, timings=timings, distinct=len(distinct))
        as64 = [t.to(torch.float64) for t in inputs]
        if op == "all_reduce":
            ref = torch.stack(as64).sum(0)
            bound = 2 * world * UNIT_ROUNDOFF[case.dtype] * torch.stack(as64).abs().sum(0)
        else:
            ref, bound = torch.cat(as64), 0.0
        outcome = judge(result, ref, bound)
        nbytes = inputs[0].numel() * inputs[0].element_size()
        factor = 2 * (world - 1) / world if op == "all_reduce" else (world - 1)
        outcome.throughput, outcome.throughput_unit = nbytes * factor / min(timings) / 1e9, "GB/s"
        return outcome


PROBES = (CollectiveProbe,)
