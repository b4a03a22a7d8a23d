"""The collective probe in the sweep's collective phase: every rank judged, every chip recorded.

Real gloo process groups (one thread per rank) on virtual CPU chips (2 and 3 ranks) and on
the ``testdev`` PrivateUse1 backend, which registers no c10d backend of its own, so the probe
stages through the host and says so. A fault on one chip is recorded against that chip only,
and a node with one device says that collectives were not covered.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from probes.collective import HOST_STAGED, CollectiveProbe, device_backend
from probes.registry import all_probes
from sdc.faults import parse_faults
from sdc.node.devices import discover
from sdc.sweep.plan import SweepOptions
from sdc.sweep.runner import run_sweep
from tests.testdev import load_or_skip


def _sweep(spec: str, faults=(), isolate=False):
    records = []
    probes = [all_probes()["collective"], all_probes()["elementwise"]]
    summary = run_sweep(discover(spec), probes, "quick", records.extend,
                        options=SweepOptions(isolate=isolate, faults=parse_faults(list(faults)), repeats=2))
    results = [r for r in records if getattr(r, "KIND", "") == "probe_result"]
    return summary, results


@pytest.mark.parametrize("spec", ["cpu:0,cpu:1", "cpu:0,cpu:1,cpu:2"])
def test_a_fault_on_one_rank_is_recorded_against_that_chip_only(spec):
    chips = spec.split(",")
    faulty = chips[-1]
    summary, results = _sweep(spec, [f"{faulty}:bitflip:rate=1,probe=collective"])
    collective = [r for r in results if r.probe == "collective"]
    assert {r.case["name"] for r in collective} == {"all_reduce", "all_gather"}
    ids = [handle.chip_id for handle in summary.chips]
    for result in collective:
        assert result.case["params"]["world"] == len(chips)
        assert result.telemetry["participants"] == ids
        assert result.telemetry["c10d_backend"] == "gloo"
        # CPU ranks have no device event: the host clock timed the collective, and says so.
        assert result.telemetry["timing_clock"] == "wall" and len(result.timings) == 2 and min(result.timings) > 0
        wrong = result.chip_id == ids[-1]
        assert (result.status == "mismatch") == wrong, (result.chip_id, result.status, result.message)
    assert len(collective) == 2 * len(chips)  # one result per chip per case: every rank judged
    assert summary.collectives == f"collectives over {', '.join(chips)}"
    # The collective phase comes after the per-chip phase: no chip's own work runs beside it.
    order = [r.probe for r in results]
    assert order.index("collective") > max(i for i, p in enumerate(order) if p == "elementwise")


def test_a_healthy_group_is_healthy_in_worker_processes():
    summary, results = _sweep("cpu:0,cpu:1", isolate=True)
    assert int(summary.exit_code) == 0
    assert {r.status for r in results if r.probe == "collective"} == {"ok"}


def test_on_a_plugin_without_a_c10d_backend_gloo_stages_through_the_host():
    load_or_skip()
    assert device_backend("testdev") is None
    summary, results = _sweep("testdev:0,testdev:1", ["testdev:0:bitflip:rate=1,probe=collective"])
    collective = [r for r in results if r.probe == "collective"]
    assert {r.telemetry["c10d_backend"] for r in collective} == {HOST_STAGED}
    assert {r.telemetry["timing_clock"] for r in collective} <= {"device", "wall"}
    assert {(r.chip_id.rsplit(":", 1)[-1], r.status) for r in collective} == {("0", "mismatch"), ("1", "ok")}
    assert all(HOST_STAGED in r.message for r in collective if r.status == "ok")


def test_one_device_says_collectives_were_not_covered():
    load_or_skip()
    summary, results = _sweep("testdev:1")
    collective = [r for r in results if r.probe == "collective"]
    assert collective and {r.status for r in collective} == {"skipped"}
    assert all("collectives not covered: this sweep has 1 testdev device(s)" in r.message for r in collective)
    assert "testdev:1: collectives not covered" in summary.collectives


def test_a_backend_registered_for_the_device_type_is_preferred():
    load_or_skip()

    def create(store, rank, world, timeout):  # a stand-in for HCCL/BKCL: the selection is under test
        return dist.ProcessGroupGloo(store, rank, world, timeout)

    before = dict(dist.Backend.default_device_backend_map)
    try:
        dist.Backend.register_backend("sdctestccl", create, devices=["testdev"])
        assert device_backend("testdev") == "sdctestccl"
    finally:
        dist.Backend.default_device_backend_map.clear()
        dist.Backend.default_device_backend_map.update(before)
    assert device_backend("testdev") is None


def test_run_outside_a_group_is_a_skip_not_a_pass():
    from probes.base import Unsupported

    probe = CollectiveProbe()
    with pytest.raises(Unsupported):
        probe.run(probe.cases("quick")[0], torch.device("cpu"), 0, 1)
