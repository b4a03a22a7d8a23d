"""Four (or two) real gloo processes train a small DDP model for 50 steps while faults are
planted; the sentinel must name the right rank, parameter and diagnosis, and only then."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_healthy_job_reports_only_ok(jobs):
    run = jobs["healthy"]
    assert run.events, "checks must become events"
    assert {e.diagnosis for e in run.events} == {"ok"}
    assert {e.kind for e in run.events} == {"grad_check", "param_check", "audit", "gemm_check"}
    assert len({e.rank for e in run.events}) == 4
    for rank in run.ranks:
        assert all(v["ok"] for v in rank["verdicts"])
        assert rank["last_verified_step"] == 49
    assert len({tuple(sorted(r["params"].items())) for r in run.ranks}) == 1
    # Each rank is its own virtual chip.
    assert {e.chip_id for e in run.events} == {f"host:testhost:cpu:{r}" for r in range(4)}


def test_grad_and_param_flips_are_named_and_resync_repairs(jobs):
    run = jobs["replicas"]
    for rank in range(4):
        bad = run.not_ok_steps(rank)
        assert set(bad) == {20, 25}, bad
        grad = bad[20]
        assert grad["diagnosis"] == "divergence"
        assert [(s["rank"], s["params"]) for s in grad["suspects"]] == [(2, ["3.weight"])]
        assert grad["suspects"][0]["chip_id"] == "host:testhost:cpu:2"
        param = bad[25]
        assert param["diagnosis"] == "divergence"
        assert [(s["rank"], s["params"]) for s in param["suspects"]] == [(1, ["0.bias"])]
        assert param["resynced"]
        # After the repair every later parameter check agrees.
        assert all(v["ok"] for v in run.ranks[rank]["verdicts"][26:])
    assert len({tuple(sorted(r["params"].items())) for r in run.ranks}) == 1
    found = [e for e in run.events if e.diagnosis == "divergence"]
    assert {(e.step, e.kind) for e in found} == {(20, "grad_check"), (25, "param_check")}
    assert all(e.details["suspects"] for e in found)
    assert {e.rank for e in found if e.details["suspect"]} == {1, 2}
    assert any(e.kind == "resync" for e in run.events)


def test_forward_faults_replayed_transient_persistent_and_data(jobs):
    run = jobs["local"]
    for rank in range(4):
        bad = run.not_ok_steps(rank)
        assert bad[26]["diagnosis"] == "transient"
        assert [s["rank"] for s in bad[26]["suspects"]] == [3]
        for step in (34, 35):
            assert bad[step]["diagnosis"] == "persistent", bad[step]
            assert [s["rank"] for s in bad[step]["suspects"]] == [3]
            assert bad[step]["skipped"]
        # A backward-pass upset on rank 1 at 42: only its local gradient norm shows it.
        assert bad[42]["diagnosis"] == "transient"
        assert [s["rank"] for s in bad[42]["suspects"]] == [1]
        assert set(bad) == {26, 34, 35, 42}, bad
        # Rank 0's bad batch at 46: the buddy reproduces the spike, so the chip is fine.
        assert run.verdict(rank, 46)["diagnosis"] == "correct" and run.verdict(rank, 46)["ok"]
    replays = {(e.step, e.diagnosis) for e in run.events if e.kind == "replay"}
    assert {(26, "transient"), (34, "persistent"), (35, "persistent"), (46, "correct")} <= replays
    assert any(e.details["losses"][3] == "inf" for e in run.events if e.kind == "replay" and e.step == 26)
    backward = [e for e in run.events if e.kind == "replay" and e.step == 42]
    assert backward and backward[0].details["reasons"] == ["grad_norm_outlier"]
    spike = [e for e in run.events if e.kind == "replay" and e.step == 46]
    assert spike and spike[0].details["reasons"] == ["loss_spike"]
    assert len({tuple(sorted(r["params"].items())) for r in run.ranks}) == 1


def test_two_ranks_unattributed_then_attributed_by_replay(jobs):
    run = jobs["two_ranks"]
    for rank in range(2):
        bad = run.not_ok_steps(rank)
        assert set(bad) == {15}
        assert bad[15]["diagnosis"] == "divergence"
        assert [(s["rank"], s["params"]) for s in bad[15]["suspects"]] == [(1, ["0.weight"])]
    at15 = {(e.kind, e.diagnosis) for e in run.events if e.step == 15}
    assert ("grad_check", "unattributed") in at15
    assert ("replay", "divergence") in at15


def test_an_error_inside_the_sentinel_does_not_stop_training(jobs):
    run = jobs["error"]
    assert all(len(r["verdicts"]) == 50 for r in run.ranks)
    assert run.ranks[1]["errors"] == 2
    errors = [e for e in run.events if e.kind == "sentinel_error"]
    assert {(e.rank, e.step) for e in errors} == {(1, 10), (1, 11)}
    assert "planted failure" in errors[0].details["error"]
    # Nobody compared at the broken steps, everyone did again afterwards.
    grad_steps = {e.step for e in run.events if e.kind == "grad_check" and e.rank == 0}
    assert 10 not in grad_steps and 11 not in grad_steps and 12 in grad_steps
    assert {e.diagnosis for e in run.events} == {"ok"}


def test_hsdp_compares_only_within_the_replicate_dimension(jobs):
    run = jobs["hsdp"]
    assert [r["group"] for r in run.ranks] == [[0, 2], [1, 3], [0, 2], [1, 3]]
    assert all(r["errors"] == 0 for r in run.ranks)
    for rank in (1, 3):  # the other replicate group holds other shards and never disagrees
        assert run.not_ok_steps(rank) == {}
    for rank in (0, 2):
        bad = run.not_ok_steps(rank)
        # Two copies of a shard: the vote cannot say which is right, but it says what differs.
        assert min(bad) == 15 and {v["diagnosis"] for v in bad.values()} == {"unattributed"}
    found = [e for e in run.events if e.step == 15 and e.kind == "param_check" and e.diagnosis == "unattributed"]
    assert {e.rank for e in found} == {0, 2}
    assert all(e.details["disagreeing_params"] == ["0.weight"] for e in found)


def test_a_replay_failing_on_one_rank_does_not_hang_its_peer(jobs):
    """Rank 1's replay of the reduction raises at step 15; rank 0 replays fine. Every rank
    still enters the recomputed all-reduces, so the job finishes and nobody is blamed."""
    run = jobs["replay_failure"]
    for rank in range(2):
        assert len(run.ranks[rank]["verdicts"]) == 50
        assert run.verdict(rank, 15)["diagnosis"] == "unattributed"
        assert run.verdict(rank, 15)["suspects"] == []
    replays = [e for e in run.events if e.step == 15 and e.kind == "replay"]
    assert replays and {e.diagnosis for e in replays} == {"unattributed"}


def test_one_upset_left_unrepaired_is_one_incident(jobs):
    """action=log: rank 2's received gradient is flipped at step 20 and never repaired, so its
    parameters stay diverged; every later parameter check still says so in its verdict, but
    the store gets one incident, not one per check."""
    run = jobs["log_once"]
    for rank in range(4):
        bad = run.not_ok_steps(rank)
        assert min(bad) == 20 and {25, 30, 45} <= set(bad)
        assert all([s["rank"] for s in v["suspects"]] == [2] for v in bad.values())
    incidents = [e for e in run.events if e.diagnosis != "ok"]
    assert {(e.step, e.kind) for e in incidents} == {(20, "grad_check")}
    assert len(incidents) == 4  # one event per reporting rank


@pytest.mark.parametrize("scenario, group_of_2", [("fsdp_gemm", [0, 1, 2, 3]), ("hsdp_gemm", [0, 2])])
def test_a_corrupted_shard_gemm_is_named_by_its_checksum(jobs, scenario, group_of_2):
    """Rank 2's output-layer GEMM computes one element wrong from step 10 on. Plain FSDP has no
    replica of that computation and HSDP's replicas receive the same reduced shard, so only
    the sampled GEMM checksum sees it; every rank of the group names rank 2."""
    run = jobs[scenario]
    for r in run.ranks:
        if r["group"] != group_of_2:
            assert run.not_ok_steps(r["rank"]) == {}  # the other replicate group computes correctly
            continue
        bad = run.not_ok_steps(r["rank"])
        assert min(bad) == 10 and set(bad) == set(range(10, 50)), sorted(bad)
        assert all([s["rank"] for s in v["suspects"]] == [2] and v["diagnosis"] == "divergence" for v in bad.values())
        assert all("gemm" in v["checks"] for v in r["verdicts"])
    found = [e for e in run.events if e.kind == "gemm_check" and e.diagnosis == "divergence"]
    assert found and all(e.details["suspects"][0]["params"] == ["3"] for e in found)


def test_at_the_defaults_a_nan_on_any_step_is_replayed_and_named_without_a_per_step_exchange(jobs):
    """DDP at the defaults: no collective on steps without a check. An Inf in rank 2's forward
    at step 7 reaches every rank's reduced gradients, so every rank stops at step 7 together,
    replays, and names rank 2; a loss spike with finite gradients (rank 1, step 33) is local
    only: reported by that rank, not replayed, no verdict."""
    run = jobs["defaults"]
    for rank in range(4):
        bad = run.not_ok_steps(rank)
        assert set(bad) == {7}, bad
        assert bad[7]["diagnosis"] == "transient" and [s["rank"] for s in bad[7]["suspects"]] == [2]
        assert bad[7]["checks"] == []  # not a check step
    replays = [e for e in run.events if e.kind == "replay" and e.step == 7]
    assert replays and {e.details["reasons"][0] for e in replays} == {"nonfinite_loss"}
    assert all(e.details["replayed"] for e in replays)
    local = [e for e in run.events if e.details.get("local_only")]
    assert [(e.rank, e.step, e.details["reasons"]) for e in local] == [(1, 33, ["loss_spike"])]
    # The budget stretched the check period past the base 20 steps: the events say so.
    grad = [e for e in run.events if e.kind == "grad_check" and e.step == 20]
    assert grad and all(e.details["next_check_step"] == 20 + e.details["check_period"] for e in grad)
