"""One rank of the fault-injection campaign (run as a subprocess by test_campaign.py and by
benchmarks/bench_sentinel.py --campaign): small models (an MLP and a transformer block),
wrapped in DDP over gloo, trained at the sentinel's DEFAULT settings while one fault model
of ``sdc.faults`` corrupts one rank — forward activations, local gradients, a parameter or
an optimizer moment; transient, intermittent or persistent. Writes per scenario what the
sentinel concluded, as JSON, for the caller to score."""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from sdc.faults import CORRUPTIONS, Corruption, Timing
from sdc.sentinel import ReplicaSentinel, SentinelConfig
from sdc.sentinel.adapters.ddp import attach_ddp
from sdc.sentinel.inject import ComputeFault, corrupt_state

# Where each corruption model strikes (bits chosen to be silent: no inf, no NaN).
CORRUPTION_ARGS = {
    "bitflip": dict(bit=26), "multibit": dict(bit=22, bits=3), "sign": {}, "scale": dict(factor=4.0),
    "set": dict(value=0.0), "noise": dict(sigma=0.5), "warp": dict(bit=21),
}
# A compute fault starts at COMPUTE_START; a state fault strikes at STATE_STEP; a transient
# compute fault hits the first audit at or after TRANSIENT_AUDIT_STEP. The check periods are the
# sentinel's own (check_budget stretches them by the measured costs), so a run lasts until the
# audits and parameter checks the scoring window needs have run, at most MAX_STEPS.
COMPUTE_START, STATE_STEP, TRANSIENT_AUDIT_STEP = 11, 13, 40
MAX_STEPS = 1000


class Block(nn.Module):
    """A small pre-norm transformer block over a short sequence, with a regression head."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.embed = nn.Linear(4, width)
        self.block = nn.TransformerEncoderLayer(width, nhead=2, dim_feedforward=32, dropout=0.1, batch_first=True, norm_first=True)
        self.head = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.embed(x))).mean(dim=1)


def build(model: str) -> nn.Module:
    if model == "mlp":
        return nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Dropout(0.1), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 2))
    return Block()


def batch_for(model: str, seed: int, rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed * 100_003 + 1000 * step + rank)
    x = torch.randn(8, 8, generator=g) if model == "mlp" else torch.randn(8, 6, 4, generator=g)
    y = torch.sin(x.reshape(8, -1)[:, :2])
    return x, y


def loss_fn(module: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(module(x), y)


def scenarios(world: int, healthy: int, full: bool) -> list[dict]:
    """Every (corruption, timing, target) combination on a rotating rank, then healthy runs."""
    out = []
    timings = ("transient", "intermittent", "persistent")
    compute_targets = ("activation", "local_grad")
    for n, corruption in enumerate(CORRUPTIONS):
        for t, timing in enumerate(timings):
            for k, target in enumerate(compute_targets if world > 2 or full else ("activation",)):
                i = len(out)
                out.append(dict(name=f"{target}-{corruption}-{timing}", model=("mlp", "block")[(n + t + k) % 2],
                                target=target, corruption=corruption, timing=timing, rank=(i * 3 + 1) % world, seed=i))
        if world > 2 or full:
            for k, target in enumerate(("param", "optimizer")):
                i = len(out)
                out.append(dict(name=f"{target}-{corruption}-transient", model=("mlp", "block")[(n + k) % 2], target=target,
                                corruption=corruption, timing="transient", rank=(i * 3 + 1) % world, seed=i))
    for h in range(healthy):
        out.append(dict(name=f"healthy-{h}", model=("mlp", "block")[h % 2], target=None, rank=None, seed=1000 + h))
    return out


def done(step: int, steps: int, audit_steps: list[int], param_steps: list[int]) -> bool:
    """At least ``steps`` steps, two audits after the compute faults start, one after the
    transient's step and a parameter check after the state faults: the same on every rank
    (the check schedule is agreed)."""
    after = [s for s in audit_steps if s >= COMPUTE_START]
    state_checked = any(s > STATE_STEP for s in param_steps)
    return step >= steps and len(after) >= 2 and after[-1] >= TRANSIENT_AUDIT_STEP and state_checked


def run(scenario: dict, steps: int) -> dict:
    rank = dist.get_rank()
    model_name = scenario["model"]
    torch.manual_seed(scenario["seed"])
    model = build(model_name)
    torch.manual_seed(10_000 + 100 * scenario["seed"] + rank)  # dropout differs per rank
    ddp = nn.parallel.DistributedDataParallel(model)
    optimizer = (torch.optim.SGD(ddp.parameters(), lr=0.02, momentum=0.9) if model_name == "mlp"
                 else torch.optim.Adam(ddp.parameters(), lr=1e-3))
    events: list[dict] = []
    deliver = lambda batch: events.extend(  # noqa: E731
        {"step": e.step, "kind": e.kind, "diagnosis": e.diagnosis, "details": e.details} for e in batch)
    sentinel = ReplicaSentinel(ddp, optimizer, config=SentinelConfig(job_id=scenario["name"]), deliver=deliver)
    attach_ddp(ddp, sentinel, loss_fn=loss_fn)
    target, mine = scenario.get("target"), scenario.get("rank") == rank
    fault = None
    if target in ("activation", "local_grad") and mine:
        corruption = Corruption(scenario["corruption"], index=5, seed=scenario["seed"], **CORRUPTION_ARGS[scenario["corruption"]])
        timing = Timing(scenario["timing"], rate=0.5, seed=scenario["seed"])
        unit = model[3] if model_name == "mlp" else model.block.linear2  # every output element reaches the loss
        param = model[3].weight if model_name == "mlp" else model.block.linear2.weight
        fault = ComputeFault(unit if target == "activation" else param, corruption, timing,
                             "forward" if target == "activation" else "backward")
    verdicts, audit_steps, param_steps, transient_step = [], [], [], None
    step = -1
    while step + 1 < MAX_STEPS and not done(step + 1, steps, audit_steps, param_steps):
        step += 1
        audit = sentinel.audit_due(step)  # decided by the periods agreed at the last check step
        if audit:
            audit_steps.append(step)
        if sentinel.check_due("params", step):
            param_steps.append(step)
        batch = batch_for(model_name, scenario["seed"], rank, step)
        if fault is not None and scenario["timing"] != "transient" and step == COMPUTE_START:
            fault.arm()
        optimizer.zero_grad(set_to_none=True)
        sentinel.on_step_begin(step, batch)
        loss = loss_fn(ddp, batch)
        sentinel.on_loss(loss)
        loss.backward()
        sentinel.on_grads_ready()
        optimizer.step()
        if target in ("param", "optimizer") and mine and step == STATE_STEP:
            param = next(p for p in model.parameters() if p.dim() == 2)
            state = param.data if target == "param" else optimizer.state[param]["momentum_buffer" if model_name == "mlp" else "exp_avg"]
            corrupt_state(state, Corruption(scenario["corruption"], index=3, seed=scenario["seed"], **CORRUPTION_ARGS[scenario["corruption"]]))
        if audit and step >= TRANSIENT_AUDIT_STEP and transient_step is None:
            transient_step = step
            if fault is not None and scenario["timing"] == "transient":
                fault.arm()  # the next forward is this step's audit
        verdict = sentinel.on_step_end(step)
        if fault is not None and scenario["timing"] == "transient":
            fault.disarm()
        if not verdict.ok:
            verdicts.append({"step": step, "diagnosis": verdict.diagnosis, "suspects": [s.rank for s in verdict.suspects],
                             "findings": verdict.details.get("findings")})
    sentinel.close()
    return {"scenario": scenario, "rank": rank, "verdicts": verdicts, "audit_steps": audit_steps, "param_steps": param_steps,
            "transient_step": transient_step, "steps": step + 1,
            "events": [e for e in events if e["diagnosis"] not in ("ok",)],
            "fired": fault.fired if fault is not None else None}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--healthy", type=int, default=30)
    parser.add_argument("--full", action="store_true", help="every target also with two ranks")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    results = [run(s, args.steps) for s in scenarios(dist.get_world_size(), args.healthy, args.full)]
    with open(os.path.join(args.out, f"campaign-rank{dist.get_rank()}.json"), "w") as fh:
        json.dump(results, fh)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
