"""The watchdog: chips run in worker processes; a hung case becomes ``timeout``, an error ``error``."""

from probes.registry import all_probes
from sdc.faults import parse_faults
from sdc.node.devices import discover
from sdc.sweep import SweepOptions, run_sweep


def test_hung_and_failing_cases_do_not_stop_the_sweep():
    faults = parse_faults(["cpu:1:hang:probe=gemm,case=odd", "cpu:1:error:probe=gemm,case=batched"], environ={})
    records, events = [], []
    summary = run_sweep(
        discover("cpu:0,cpu:1"),
        [all_probes()["gemm"]],
        "quick",
        records.extend,
        progress=lambda handle, probe, case, outcome: events.append((handle.name, case.name, outcome and outcome.status)),
        options=SweepOptions(faults=faults, case_timeout_s=6.0),
    )
    results = {(r.chip_id.rsplit(":", 1)[-1], r.case["name"], r.case["dtype"]): r for r in records if r.KIND == "probe_result"}
    assert results[("1", "odd", "fp32")].status == "timeout"
    assert "worker killed" in results[("1", "odd", "fp32")].message
    assert results[("1", "batched", "fp32")].status == "error"
    assert "injected" in results[("1", "batched", "fp32")].message
    # After the hang a fresh worker ran the rest of cpu:1's cases.
    assert results[("1", "tall", "fp16")].status == "ok"
    assert all(r.status in ("ok", "skipped") for k, r in results.items() if k[0] == "0")
    assert summary.sweep.status == "complete" and records[-1].status == "complete"
    assert summary.chips[1].exit_code == 2, "timeout and error are unknown, never a fault"
    assert summary.exit_code == 2
    assert ("cpu:1", "odd", None) in events and ("cpu:1", "odd", "timeout") in events


def test_results_carry_telemetry_field_and_cpu_has_none():
    from sdc.node.telemetry import NoTelemetry, telemetry_for, throttle_names

    (chip,) = discover("cpu:0")
    assert isinstance(telemetry_for(chip), NoTelemetry) and telemetry_for(chip).sample() == {}
    assert throttle_names(0x4 | 0x40) == ["sw_power_cap", "hw_thermal_slowdown"]


class _Raising:
    name, version = "raising", 1

    def __init__(self, exc):
        self.exc = exc

    def run(self, case, device, seed, repeats, faults=None):
        raise self.exc


def test_out_of_memory_and_missing_dtypes_are_error_or_skipped_never_mismatch():
    import torch

    from probes.base import Case, Unsupported
    from sdc.sweep import run_case

    (chip,) = discover("cpu:0")
    case = Case("square", (8, 8, 8), "fp16")
    expected = {
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB"): ("error", "out of memory"),
        RuntimeError('"addmm_impl_cpu_" not implemented for \'Half\''): ("skipped", "not supported here"),
        Unsupported("fp8 GEMM needs compute capability 8.9 or newer"): ("skipped", "compute capability"),
        ValueError("a bug in a probe"): ("error", "ValueError: a bug in a probe"),
    }
    for exc, (status, words) in expected.items():
        outcome = run_case(_Raising(exc), case, chip, 0, 3)
        assert outcome.status == status and words in outcome.message, (exc, outcome)


def test_a_wrong_answer_is_retested_in_a_fresh_worker_in_the_same_sweep():
    # cpu:1 gives the same wrong answer every time on gemm/square: the retest reproduces it.
    faults = parse_faults(["cpu:1:bitflip:rate=1,sticky=1,probe=gemm,case=square"], environ={})
    records = []
    summary = run_sweep(discover("cpu:0,cpu:1"), [all_probes()["gemm"]], "quick", records.extend, options=SweepOptions(faults=faults))
    results = [r for r in records if r.KIND == "probe_result" and r.chip_id.endswith(":1") and r.case["name"] == "square"
               and r.status != "skipped"]
    first = [r for r in results if "retest_of" not in r.telemetry and r.status == "mismatch"]
    retests = [r for r in results if "retest_of" in r.telemetry]
    assert first and all(r.distinct_repeat_digests == 1 for r in first)
    assert len(retests) == len(first)  # one retest each, same sweep
    for retest in retests:
        original = next(r for r in first if r.result_id == retest.telemetry["retest_of"])
        assert retest.sweep_id == original.sweep_id and retest.case == original.case
        assert retest.telemetry["reproduced"] is True and retest.digest == original.digest
        assert "retest in a fresh worker process: reproduced" in retest.message
    assert not any("retest_of" in r.telemetry for r in records if r.KIND == "probe_result" and r.chip_id.endswith(":0"))
    assert summary.chips[1].statuses["mismatch"] == len(first)  # a retest is not counted twice
