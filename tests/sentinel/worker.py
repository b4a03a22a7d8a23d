"""One rank of a sentinel test job (run as a subprocess by the tests): a tiny MLP built from
a config, wrapped in DDP over gloo, trained for N steps with faults planted per scenario.
Writes the rank's verdicts and final parameter digest as JSON for the test to check."""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from sdc.digest import digest
from sdc.sentinel import ReplicaSentinel, SentinelConfig
from sdc.sentinel.adapters.ddp import attach_ddp
from sdc.sentinel.inject import ActivationFault, flip_bit, flip_grad, flip_param

MODEL_CONFIG = {"inputs": 8, "hidden": 32, "outputs": 4, "dropout": 0.1}
# SDC_TEST_DEVICE=cuda runs the DDP scenarios on the GPU (every rank on cuda:0, reduced over
# gloo), so the digests and the sentinel's device paths run there; HSDP stays on the CPU.
DEVICE = torch.device(os.environ.get("SDC_TEST_DEVICE", "cpu"))

# name: SentinelConfig overrides. These scenarios test what each check finds at a chosen step,
# so their checks run exactly at their periods (check_budget=0; the budget's schedule is tested
# in test_schedule.py and by the campaign) -- except "defaults", the sentinel as shipped.
EXACT = dict(check_budget=0)
SCENARIOS = {
    "healthy": dict(**EXACT, grad_every=1, param_every=5, local_every=1, action="log"),
    "replicas": dict(**EXACT, grad_every=1, param_every=5, local_every=1, action="resync", optimizer_state=True),
    "local": dict(**EXACT, grad_every=1, param_every=5, local_every=1, flags_every=1, action="skip_step", warmup_steps=5),
    "two_ranks": dict(**EXACT, grad_every=1, param_every=5, local_every=1, action="skip_step"),
    "replay_failure": dict(**EXACT, grad_every=1, param_every=5, local_every=1, action="skip_step"),
    "error": dict(**EXACT, grad_every=1, param_every=5, local_every=1, action="log"),
    "log_once": dict(**EXACT, grad_every=1, param_every=5, local_every=1, action="log"),
    "hsdp": dict(**EXACT, grad_every=1, param_every=5, local_every=0, action="log"),
    "fsdp_gemm": dict(**EXACT, gemm_check_every=1, gemm_check_layers=2, action="log"),
    "hsdp_gemm": dict(**EXACT, grad_every=1, param_every=5, local_every=0, gemm_check_every=1, gemm_check_layers=2, action="log"),
    # The shipped defaults, but for the action: skip_step drops the update the Inf at step 7
    # would make (under "log" it turns every parameter NaN), so the later steps still say something.
    "defaults": dict(action="skip_step"),
}


def build_model(config: dict) -> nn.Module:
    return nn.Sequential(
        nn.Linear(config["inputs"], config["hidden"]),
        nn.Tanh(),
        nn.Dropout(config["dropout"]),
        nn.Linear(config["hidden"], config["outputs"]),
    )


def batch_for(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(16, MODEL_CONFIG["inputs"], generator=g)
    return x.to(DEVICE), torch.sin(x[:, : MODEL_CONFIG["outputs"]]).to(DEVICE)


def loss_fn(module: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(module(x), y)


def run_hsdp(steps: int, args: argparse.Namespace) -> dict:
    """FSDP2 on a 2x2 mesh: ranks {0,2} and {1,3} hold the same shards; rank 2's shard is corrupted."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from sdc.sentinel.adapters.fsdp import hsdp_sentinel

    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard"))
    batch_on_cpu = lambda step: tuple(t.cpu() for t in batch_for(rank, step))  # noqa: E731
    torch.manual_seed(0)
    model = build_model(MODEL_CONFIG)
    fully_shard(model, mesh=mesh)
    torch.manual_seed(100 + rank)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    config = SentinelConfig(job_id="test-hsdp", database_url=args.database_url, outbox_dir=args.outbox, **SCENARIOS["hsdp"])
    sentinel = hsdp_sentinel(model, optimizer, mesh, config=config)
    verdicts = []
    for step in range(steps):
        batch = batch_on_cpu(step)
        optimizer.zero_grad(set_to_none=True)
        sentinel.on_step_begin(step, batch)
        loss = loss_fn(model, batch)
        sentinel.on_loss(loss)
        loss.backward()
        sentinel.on_grads_ready()
        optimizer.step()
        if rank == 2 and step == 12:
            flip_bit(model[0].weight.to_local(), 0, 19)
        verdict = sentinel.on_step_end(step)
        verdicts.append({"step": step, "diagnosis": verdict.diagnosis, "ok": verdict.ok,
                         "suspects": [s.to_dict() for s in verdict.suspects], "details": verdict.details})
    sentinel.close()
    return {"rank": rank, "world": 4, "verdicts": verdicts, "group": sentinel.comm.ranks, "errors": sentinel.errors}


def run_fsdp_gemm(scenario: str, steps: int, args: argparse.Namespace) -> dict:
    """FSDP2 (plain, or HSDP on 2x2) with one rank's output-layer GEMM computing one element
    wrong from step 10 on: only the GEMM checksum can see it (no replica computes that shard)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from sdc.faults import Corruption, Timing
    from sdc.sentinel.adapters.fsdp import fsdp_sentinel, hsdp_sentinel
    from sdc.sentinel.inject import ComputeFault

    rank = dist.get_rank()
    hsdp = scenario == "hsdp_gemm"
    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("replicate", "shard")) if hsdp else init_device_mesh("cpu", (4,))
    torch.manual_seed(0)
    model = build_model(MODEL_CONFIG)
    fault = ComputeFault(model[3], Corruption("bitflip", index=2, bit=27), Timing("persistent")) if rank == 2 else None
    fully_shard(model, mesh=mesh)
    torch.manual_seed(100 + rank)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    config = SentinelConfig(job_id=f"test-{scenario}", database_url=args.database_url, outbox_dir=args.outbox, **SCENARIOS[scenario])
    sentinel = (hsdp_sentinel if hsdp else fsdp_sentinel)(model, optimizer, mesh, config=config)
    verdicts = []
    for step in range(steps):
        batch = tuple(t.cpu() for t in batch_for(rank, step))
        if fault is not None and step == 10:
            fault.arm()
        optimizer.zero_grad(set_to_none=True)
        sentinel.on_step_begin(step, batch)
        loss = loss_fn(model, batch)
        sentinel.on_loss(loss)
        loss.backward()
        sentinel.on_grads_ready()
        optimizer.step()
        verdict = sentinel.on_step_end(step)
        verdicts.append({"step": step, "diagnosis": verdict.diagnosis, "ok": verdict.ok,
                         "suspects": [s.to_dict() for s in verdict.suspects], "checks": list(verdict.checks)})
    sentinel.close()
    return {"rank": rank, "world": 4, "verdicts": verdicts, "group": sentinel.comm.ranks, "errors": sentinel.errors}


def run_scenario(scenario: str, steps: int, args: argparse.Namespace) -> dict | None:
    """Train one small job under ``scenario``; None on ranks outside its process group."""
    rank, world = dist.get_rank(), dist.get_world_size()
    if scenario == "hsdp":
        return run_hsdp(steps, args)
    if scenario in ("fsdp_gemm", "hsdp_gemm"):
        return run_fsdp_gemm(scenario, steps, args)
    group = None
    if scenario in ("two_ranks", "replay_failure"):
        group = dist.new_group([0, 1])  # every rank must create it, only 0 and 1 train
        if rank > 1:
            return None
        world = 2
    torch.manual_seed(0)  # identical replicas
    model = build_model(MODEL_CONFIG).to(DEVICE)
    torch.manual_seed(100 + rank)  # different dropout masks per rank, as in real training
    if DEVICE.type == "cuda":
        torch.cuda.manual_seed(100 + rank)
    ddp = nn.parallel.DistributedDataParallel(model, process_group=group)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    # Ranks sharing one GPU are one physical chip; they keep the virtual chips' names so the
    # tests' attribution checks read the same on either device.
    chip = {"chip_id": f"host:testhost:cpu:{rank}"} if DEVICE.type != "cpu" else {}
    config = SentinelConfig(job_id=f"test-{scenario}", database_url=args.database_url, outbox_dir=args.outbox, **SCENARIOS[scenario], **chip)
    sentinel = ReplicaSentinel(ddp, optimizer, group=group, config=config)
    attach_ddp(ddp, sentinel, loss_fn=loss_fn)

    hidden = model[3]  # the output layer: every element reaches the loss
    transient = ActivationFault(hidden, flat_index=5, bit=30, persistent=False)
    persistent = ActivationFault(hidden, flat_index=5, bit=30, persistent=True)
    if scenario == "error" and rank == 1:
        real = sentinel._grad_fingerprints

        def broken():
            if sentinel.step in (10, 11):
                raise RuntimeError("planted failure inside the sentinel")
            return real()

        sentinel._grad_fingerprints = broken

    if scenario == "replay_failure" and rank == 1:
        # The replay of the reduction fails on one rank only: its peer still waits in the
        # recomputed all-reduces, which the failing rank must enter too.
        working = sentinel.replay_fn

        def failing(batch):
            if sentinel.step == 15:
                raise RuntimeError("planted replay failure")
            return working(batch)

        sentinel.replay_fn = failing

    backward_fault = {"armed": False}

    def corrupt_grad(grad: torch.Tensor) -> torch.Tensor:
        # A backward-pass upset: an exponent bit of one gradient element (x 2**128), once.
        if not backward_fault["armed"]:
            return grad
        backward_fault["armed"] = False
        grad = grad.clone()
        flip_bit(grad, 3, 30)
        return grad

    model[0].weight.register_hook(corrupt_grad)

    verdicts = []
    for step in range(steps):
        batch = batch_for(rank, step)
        if scenario == "local" and rank == 1 and step == 42:
            backward_fault["armed"] = True
        if scenario == "local" and rank == 0 and step == 46:
            batch = (batch[0], batch[1] * 30)  # bad data: a real spike every replay reproduces
        if scenario == "defaults" and rank == 2 and step == 7:
            transient.arm()  # an Inf in the forward pass, on a step with no periodic check
        if scenario == "defaults" and rank == 1 and step == 33:
            batch = (batch[0], batch[1] * 30)  # a loss spike with finite gradients: seen by rank 1 alone
        if scenario == "local" and rank == 3:
            if step == 26:
                transient.arm()
            if step in (34, 35):
                persistent.arm()
        optimizer.zero_grad(set_to_none=True)
        sentinel.on_step_begin(step, batch)
        loss = loss_fn(ddp, batch)
        sentinel.on_loss(loss)
        loss.backward()
        if scenario in ("replicas", "log_once") and rank == 2 and step == 20:
            flip_grad(ddp, "3.weight", flat_index=7, bit=22)
        if scenario in ("two_ranks", "replay_failure") and rank == 1 and step == 15:
            flip_grad(ddp, "0.weight", flat_index=3, bit=21)
        sentinel.on_grads_ready()
        persistent.disarm()
        optimizer.step()
        if scenario == "replicas" and rank == 1 and step == 22:
            flip_param(ddp, "0.bias", flat_index=2, bit=19)
        verdict = sentinel.on_step_end(step)
        verdicts.append(
            {
                "step": step,
                "diagnosis": verdict.diagnosis,
                "ok": verdict.ok,
                "suspects": [s.to_dict() for s in verdict.suspects],
                "skipped": verdict.skipped,
                "resynced": verdict.resynced,
                "checks": list(verdict.checks),
            }
        )
    sentinel.close()
    return {
        "rank": rank,
        "world": world,
        "verdicts": verdicts,
        "params": {name: digest(p) for name, p in model.named_parameters()},
        "last_verified_step": sentinel.last_verified_step,
        "errors": sentinel.errors,
        "chip_id": sentinel.chip_id,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenarios", required=True, help="comma-separated names from SCENARIOS")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--outbox", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    for scenario in args.scenarios.split(","):
        result = run_scenario(scenario, args.steps, args)
        if result is not None:
            with open(os.path.join(args.out, f"{scenario}-rank{dist.get_rank()}.json"), "w") as fh:
                json.dump(result, fh)
        dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
