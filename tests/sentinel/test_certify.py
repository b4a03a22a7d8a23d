"""Checkpoint certification: a checkpoint saved at step 10 is a candidate, certified by the
next clean complete check cycle (parameters + audit, step 20); ``sdc checkpoint verify``
finds storage corruption and names the newest certified checkpoint to resume from."""

from __future__ import annotations

import json
import time

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from sdc.cli import cli
from sdc.sentinel import ReplicaSentinel, SentinelConfig
from sdc.sentinel.certify import certifier_for, manifest_path, read_manifest


def train(tmp_path, steps: int, saves: dict[int, str], fault_step: int | None = None, budget: float = 0.0,
          audited: list | None = None, step_seconds: float = 0.0, cap: int = 200):
    """Checks and audits exactly every 20 steps unless ``budget`` (SentinelConfig.check_budget) stretches them;
    ``step_seconds`` makes each step last that long (a model whose step outweighs the audit)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sentinel = ReplicaSentinel(model, optimizer, config=SentinelConfig(check_budget=budget, max_check_period=cap), deliver=lambda events: None,
                               replay_fn=lambda b: nn.functional.mse_loss(model(b[0]), b[1]))
    for step in range(steps):
        x = torch.randn(8, 4)
        batch = (x, x.sum(1, keepdim=True))
        optimizer.zero_grad()
        sentinel.on_step_begin(step, batch)
        loss = nn.functional.mse_loss(model(x), batch[1])
        sentinel.on_loss(loss)
        loss.backward()
        sentinel.on_grads_ready()
        optimizer.step()
        time.sleep(step_seconds)
        checks = sentinel.on_step_end(step).checks
        if audited is not None and ("audit" in checks or "params" in checks):
            audited.append((step, "params" in checks, "audit" in checks))
        if step in saves:
            path = tmp_path / saves[step]
            torch.save(model.state_dict(), path)
            certifier_for(sentinel).saved(path, step, model)
    sentinel.close()
    return sentinel


def test_a_checkpoint_is_certified_by_the_next_clean_cycle(tmp_path):
    train(tmp_path, 35, {10: "a.pt", 25: "b.pt"})
    assert read_manifest(tmp_path / "a.pt")["status"] == "certified"
    assert read_manifest(tmp_path / "a.pt")["certified_by_step"] == 20
    # No complete cycle after step 25 yet: still a candidate.
    assert read_manifest(tmp_path / "b.pt")["status"] == "candidate"


def test_with_the_default_check_budget_a_checkpoint_waits_for_the_next_check_cycle(tmp_path):
    """The default budget (1 %) stretches the period of every check alike (an audit here costs
    about a ms, a step 2 ms): parameter checks and audits stay on the same steps, one cycle, and
    a checkpoint is certified at the first cycle after it, which comes later than 20 steps but
    no later than the cap on the period (max_check_period, 50 here) allows."""
    audited: list[tuple[int, bool, bool]] = []
    budget = SentinelConfig().check_budget
    assert budget > 0
    train(tmp_path, 150, {45: "a.pt"}, budget=budget, audited=audited, step_seconds=0.002, cap=50)
    assert all(params and audit for _, params, audit in audited), audited  # one cycle: both at once
    steps = [s for s, _, _ in audited]
    after = [s for s in steps if s > 45]
    # Base periods until a cost is learnt (none at step 0; the first cycle's one-time costs are
    # not learnt), then stretched, never past the cap.
    assert steps[:3] == [0, 20, 40] and after and 60 < after[0] <= 40 + 50, steps
    assert all(b - a <= 50 for a, b in zip(steps, steps[1:])), steps
    assert read_manifest(tmp_path / "a.pt")["certified_by_step"] == after[0]


def test_verify_finds_storage_corruption_and_the_checkpoint_to_resume_from(tmp_path):
    train(tmp_path, 65, {10: "a.pt", 30: "b.pt", 50: "c.pt"})
    runner = CliRunner()
    ok = runner.invoke(cli, ["--json", "checkpoint", "verify", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.output)
    assert report["resume_from"] == str(tmp_path / "c.pt")
    assert all(c["intact"] for c in report["checkpoints"])
    # One bit of the newest checkpoint rots on disk.
    state = torch.load(tmp_path / "c.pt")
    flip_param_tensor = state["0.weight"]
    flip_param_tensor.view(torch.int32)[0, 0] ^= 1 << 3
    torch.save(state, tmp_path / "c.pt")
    bad = runner.invoke(cli, ["checkpoint", "verify", str(tmp_path)])
    assert bad.exit_code == 1, bad.output
    assert "CORRUPTED" in bad.output and "0.weight" in bad.output
    assert f"resume from: {tmp_path / 'b.pt'}" in bad.output


@pytest.mark.parametrize("setup", ["missing", "garbage", "no manifest"])
def test_verify_bad_input_is_one_line_and_exit_2(tmp_path, setup):
    target = tmp_path / "x.pt"
    if setup == "garbage":
        target.write_bytes(b"not a checkpoint")
        manifest_path(target).write_text(json.dumps({"digests": {"w": "0"}, "step": 1}))
    elif setup == "no manifest":
        torch.save({"w": torch.ones(2)}, target)
    result = CliRunner().invoke(cli, ["checkpoint", "verify", str(target)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_a_disagreement_rejects_the_candidate(tmp_path):
    """Two checks disagreeing is impossible in one process; the certifier's rule is tested directly."""
    from sdc.sentinel.certify import Certifier
    from sdc.sentinel.vote import StepVerdict

    model = nn.Linear(2, 1)
    torch.save(model.state_dict(), tmp_path / "a.pt")
    certifier = Certifier(writes=True, job_id="j")
    certifier.saved(tmp_path / "a.pt", 5, model)

    class Sentinel:
        config = SentinelConfig()

        class replayer:
            replay_fn = staticmethod(lambda batch: None)

    certifier.on_verdict(Sentinel, StepVerdict(10, "divergence", checks=("params",)))
    certifier.on_verdict(Sentinel, StepVerdict(20, "ok", checks=("params", "audit")))
    assert read_manifest(tmp_path / "a.pt")["status"] == "rejected"


def test_a_sentinel_without_audits_certifies_on_parameter_checks(tmp_path):
    """No replay function (e.g. the plain HF callback): no audits run, so a clean parameter
    check completes the cycle; checks spread over several steps count together."""
    from sdc.sentinel.certify import Certifier
    from sdc.sentinel.vote import StepVerdict

    model = nn.Linear(2, 1)
    torch.save(model.state_dict(), tmp_path / "a.pt")
    certifier = Certifier(writes=True, job_id="j")
    certifier.saved(tmp_path / "a.pt", 5, model)

    class Sentinel:
        config = SentinelConfig()

        class replayer:
            replay_fn = None

    certifier.on_verdict(Sentinel, StepVerdict(10, "ok", checks=("grads",)))
    assert read_manifest(tmp_path / "a.pt")["status"] == "candidate"
    certifier.on_verdict(Sentinel, StepVerdict(20, "ok", checks=("grads", "params")))
    assert read_manifest(tmp_path / "a.pt")["status"] == "certified"


def test_a_distributed_checkpoint_directory_is_verified(tmp_path):
    import torch.distributed.checkpoint as dcp

    from sdc.sentinel.certify import Certifier, verify

    model = nn.Linear(3, 2)
    target = tmp_path / "dcp-step-7"
    dcp.save(model.state_dict(), checkpoint_id=str(target))
    Certifier(writes=True, job_id="j").saved(target, 7, model)
    result = verify(target)
    assert result.intact and result.compared == 2 and result.step == 7
