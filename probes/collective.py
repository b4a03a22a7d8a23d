"""Collective probes: all-reduce and all-gather across the chips of this node, every rank judged.

A collective involves several chips, so it cannot be a per-chip case: a fault on chip d+1
used to be recorded against chip d, whose worker ran the pair while d+1's own worker ran its
probes in parallel. The sweep therefore runs this probe in a phase of its own, after every
chip's per-chip cases, once per group of chips of one device type (``run_group``): one
thread per rank in one worker process (c10d process groups built directly on a shared
in-memory store, so no extra processes start). Each rank's input is seeded by its rank, and
*every* rank's output is judged against an fp64 reference (all-reduce: within the rounding of
``world`` additions; all-gather: exact) and over repeats, so each chip gets its own result.

Which c10d backend: the device's own where one is registered for its type (NCCL/RCCL on
CUDA, XCCL on XPU, and a plug-in's HCCL, BKCL, CNCL ... registered through
``torch.distributed.Backend.register_backend(..., devices=[type])``); otherwise gloo with host
staging (each rank's tensor copied to the host, reduced there by gloo, copied back), which
tests the device's copies and memory but not its interconnect. The result says which was used
(``telemetry["c10d_backend"]``). Virtual CPU chips form their group on the CPU with gloo.

Throughput is the per-device bus bandwidth (the NCCL-tests convention): bytes * 2(n-1)/n for
all-reduce, bytes * (n-1)/n for all-gather, over the time. Determinism: with two ranks each
element is one addition (order does not matter); with more, the ring order is fixed for a
fixed topology. Judged bit for bit. Each repeat is timed on the device's clock (``DeviceTimer``:
events on the rank's stream around the collective, group setup left out); a CPU rank, with no
device event, by the host clock; ``telemetry["timing_clock"]`` says which.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any, Sequence

import torch
import torch.distributed as dist

from probes.base import Case, Outcome, Probe, Unsupported
from probes.harness import UNIT_ROUNDOFF, DeviceTimer, DistinctOutputs, Repeats, judge, randn, timed_fault_stretch
from probes.sizing import host_seconds, sized, transfer_bandwidth

TIMEOUT = timedelta(seconds=60)
HOST_STAGED = "gloo (host staging)"


def device_backend(device_type: str) -> str | None:
    """The c10d backend registered for ``device_type`` other than gloo (nccl, xccl, hccl ...), or None."""
    if device_type == "cpu":
        return None
    name = dist.Backend.default_device_backend_map.get(device_type)
    if not name or name == "gloo":
        return None
    if name == "nccl" and not dist.is_nccl_available():
        return None
    return name


def _process_group(store, rank: int, world: int, device: torch.device, backend: str | None):
    if backend == "nccl":
        return dist.ProcessGroupNCCL(store, rank, world, dist.ProcessGroupNCCL.Options())
    if backend is not None:
        plugin = dist.Backend._plugins.get(backend.upper())
        if plugin is not None:
            if plugin.extended_api:
                options = dist.distributed_c10d._DistributedBackendOptions()
                options.store, options.group_rank, options.group_size, options.timeout = store, rank, world, TIMEOUT
                return plugin.creator_fn(options, None)
            return plugin.creator_fn(store, rank, world, TIMEOUT)
        if backend == "xccl" and hasattr(dist, "ProcessGroupXCCL"):
            return dist.ProcessGroupXCCL(store, rank, world)
    return dist.ProcessGroupGloo(store, rank, world, TIMEOUT)


class _Rank:
    """One rank's view of the case: its device, input, and what it saw over the repeats."""

    def __init__(self, device: torch.device, data: torch.Tensor, injector):
        self.device = device
        self.data = data
        self.injector = injector
        self.outputs = DistinctOutputs()
        self.timings: list[float] = []
        self.clock = "wall"  # "device" when the rank's device has timing events


def _collective(op: str, ranks: list[_Rank], repeats: int, backend: str | None, probe: str, case: str) -> None:
    """Run ``op`` ``repeats`` times on one thread per rank; fills each rank's outputs and timings."""
    world = len(ranks)
    store = dist.HashStore()
    errors: list[BaseException] = []
    barrier = threading.Barrier(world)
    staged = backend is None and ranks[0].device.type != "cpu"

    def rank_main(rank: int) -> None:
        me = ranks[rank]
        try:
            if me.device.type != "cpu":
                module = getattr(torch, me.device.type, None)
                if module is not None and hasattr(module, "set_device"):
                    module.set_device(me.device)
            group = _process_group(store, rank, world, me.device, backend)
            data = me.data.to(me.device)
            # The collective itself, on the device's clock (events on this rank's stream, which
            # waits for the collective's): not the group's setup, not the host's launch.
            # Only a CPU rank, which has no device event, is timed by the host clock.
            timer = DeviceTimer(me.device)
            me.clock = timer.clock
            for repeat in range(repeats):
                if me.injector:
                    me.injector.before(probe, case)
                barrier.wait()
                timer.start()
                source = data.cpu() if staged else data
                if op == "all_reduce":
                    out = source.clone()
                    group.allreduce([out]).wait()
                else:
                    gathered = [torch.empty_like(source) for _ in range(world)]
                    group.allgather([gathered], [source]).wait()
                    out = torch.cat(gathered)
                if staged:
                    out = out.to(me.device)
                elapsed = timed_fault_stretch(me.injector, probe, case, timer.stop())
                if me.injector:
                    out = me.injector.corrupt(out, probe, case, repeat)
                me.timings.append(elapsed)
                me.outputs.add(out)
        except BaseException as exc:  # reported to the caller; the other ranks stop at the barrier
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=rank_main, args=(r,), daemon=True) for r in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
        raise (real or errors)[0]


class CollectiveProbe(Probe):
    name = "collective"
    version = 2
    # Run by the sweep once per group of chips, after the per-chip phase (see the docstring).
    group = True

    def cases(self, suite: str) -> list[Case]:
        elements = {"quick": 1 << 16, "standard": 1 << 22}.get(suite)
        if elements is None:
            return []
        return [Case(op, (elements,), "fp32", {"op": op}) for op in ("all_reduce", "all_gather")]

    def cases_for(self, suite: str, device: torch.device) -> list[Case]:
        base = self.cases(suite)
        if not base:
            return base
        large = [Case(c.name, (1 << 26,), "bf16", dict(c.params)) for c in base]
        return base + sized(device, large, lambda case: self.estimate_s(case, device), lambda case: 12.0 * case.shape[0])

    def estimate_s(self, case: Case, device: torch.device) -> float:
        elements = case.shape[0]
        nbytes = elements * 4
        return 0.2 + 3 * 2 * nbytes / transfer_bandwidth(device, cpu=2e9) + host_seconds(device, 2 * elements)

    def run(self, case: Case, device: torch.device, seed: int, repeats: int, faults=None) -> Outcome:
        raise Unsupported("a collective runs on a group of chips, in the sweep's collective phase")

    def run_group(
        self, case: Case, devices: Sequence[torch.device], seed: int, repeats: int, injectors: Sequence[Any]
    ) -> list[Outcome]:
        """Run ``case`` on one rank per device; one judged ``Outcome`` per rank, in rank order."""
        world = len(devices)
        if world < 2:
            raise Unsupported(f"a collective needs 2 or more devices; this group has {world}")
        op = str(case.params["op"])
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[case.dtype]
        inputs = [randn(case.shape, seed, "collective", op, rank, case.shape, dtype=dtype) for rank in range(world)]
        backend = device_backend(devices[0].type)
        used = backend or ("gloo" if devices[0].type == "cpu" else HOST_STAGED)
        ranks = [_Rank(d, x, i) for d, x, i in zip(devices, inputs, injectors)]
        _collective(op, ranks, max(1, repeats), backend, self.name, case.name)
        as64 = [t.to(torch.float64) for t in inputs]
        if op == "all_reduce":
            ref = torch.stack(as64).sum(0)
            bound = 2 * world * UNIT_ROUNDOFF[case.dtype] * torch.stack(as64).abs().sum(0)
        else:
            ref, bound = torch.cat(as64), 0.0
        nbytes = inputs[0].numel() * inputs[0].element_size()
        factor = 2 * (world - 1) / world if op == "all_reduce" else (world - 1)
        outcomes = []
        for rank, me in enumerate(ranks):
            assert me.outputs.first is not None
            result = Repeats(first=me.outputs.first, digests=me.outputs.digests, timings=me.timings,
                             distinct=len(me.outputs.digests), clock=me.clock)
            outcome = judge(result, ref, bound)
            outcome.throughput, outcome.throughput_unit = nbytes * factor / min(me.timings) / 1e9, "GB/s"
            outcome.telemetry.update({"c10d_backend": used, "rank": rank, "world": world})
            if outcome.status == "ok":
                outcome.message = f"rank {rank} of {world} over {used}"
            outcomes.append(outcome)
        return outcomes


PROBES = (CollectiveProbe,)
