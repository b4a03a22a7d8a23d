"""Probe cases are sized from a measured calibration of the device (and its memory), not its type.

On the ``testdev`` PrivateUse1 backend: made slow (``SDC_TESTDEV_DELAY_US``) it plans none of
the accelerator-sized cases and every planned case fits the allowance; told it is as fast as
a large GPU it plans them; the memory probe sizes its buffer from the device's free memory;
and a budget is spent on the measured estimates.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from probes import sizing
from probes.memory import buffer_words
from probes.registry import all_probes
from tests.testdev import load_or_skip, subprocess_env, why_unavailable

LARGE = {"gemm": 8192, "attention": 2048, "norms": 1 << 27, "elementwise": 1 << 24, "transfer": 1 << 26, "collective": 1 << 26}


def _plan(device: torch.device, suite: str = "quick") -> list[tuple[str, dict]]:
    return [(p.name, c.to_dict()) for p in all_probes().values() for c in p.cases_for(suite, device)]


PLAN_SCRIPT = """
import json, torch
import tests.testdev.backend
from probes import sizing
from probes.registry import all_probes
from sdc.sweep.plan import SweepOptions, chip_plan
from sdc.node.devices import discover
device = torch.device("testdev", 0)
probes = list(all_probes().values())
plan = [(p.name, c.to_dict(), p.estimate_s(c, device)) for p in probes for c in p.cases_for("quick", device)]
handle = discover("testdev:0")[0]
budget = [(p.name, c.to_dict(), p.estimate_s(c, device)) for p, c in chip_plan(probes, "quick", handle, SweepOptions(budget_s=20))]
print(json.dumps({"plan": plan, "budget": budget, "gemm_bf16": sizing.gemm_flops(device, "bf16")}))
"""


def test_a_slow_accelerator_plans_only_cases_that_fit_and_a_budget_holds():
    if why_unavailable():
        pytest.skip(why_unavailable())
    env = subprocess_env(SDC_TESTDEV_DELAY_US="20000")  # 20 ms per operator: a very slow chip
    run = subprocess.run([sys.executable, "-c", PLAN_SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    assert found["gemm_bf16"] < 1e12
    names = {(probe, case["name"], json.dumps(case["shape"])) for probe, case, _ in found["plan"]}
    assert ("gemm", "square", json.dumps([8192, 8192, 8192])) not in names
    assert all(seconds <= sizing.CASE_ALLOWANCE_S for _, _, seconds in found["plan"])
    # The device-type guess used to give every accelerator the H200 cases; none of the compute-
    # bound ones remain. (A 64 MB elementwise pass is bandwidth-bound: on this emulated chip its
    # estimate lands within a hair of the allowance, either side depending on the host's load, so
    # only the bound above is asserted for it.)
    compute_bound = {p: size for p, size in LARGE.items() if p != "elementwise"}
    assert not [c for p, c, _ in found["plan"] if p in compute_bound and c["shape"] and max(c["shape"]) >= compute_bound[p]]
    assert found["budget"] and sum(seconds for _, _, seconds in found["budget"]) <= 20


def test_a_fast_accelerator_plans_the_large_cases(monkeypatch):
    load_or_skip()
    device = torch.device("testdev", 1)
    fast = {("testdev", f"gemm-{d}"): 2.0**50 for d in ("fp32", "bf16", "fp16")}
    fast.update({("testdev", "stream"): 2.0**42, ("testdev", "transfer"): 2.0**36})
    monkeypatch.setattr(sizing, "_measured", fast)
    monkeypatch.setattr(sizing, "HOST_ELEMENTS_PER_S", 1e12)
    planned = {(p, c["name"], tuple(c["shape"]), c["dtype"]) for p, c in _plan(device)}
    assert ("gemm", "square", (8192, 8192, 8192), "bf16") in planned
    assert ("elementwise", "exp", (1 << 24,), "fp32") in planned
    # ... but never a case that needs more than half the device's 2 GiB.
    assert ("norms", "sum", (1 << 27,), "fp32") not in planned
    assert ("attention", "forward", (4, 16, 2048, 128), "bf16") not in planned


def test_virtual_cpu_chips_keep_their_base_cases():
    cpu = torch.device("cpu")
    for probe in all_probes().values():
        assert [c.to_dict() for c in probe.cases_for("quick", cpu)] == [c.to_dict() for c in probe.cases("quick")]


def test_the_memory_probe_sizes_its_buffer_from_the_device_memory():
    load_or_skip()
    device = torch.device("testdev", 0)
    memory = all_probes()["memory"]
    (case,) = memory.cases_for("quick", device)
    free, total = torch.testdev.mem_get_info(0)
    if "share" not in case.params:  # the device was measured too slow for the share's passes
        assert case.params == {"mib": 0.25}
        return
    words = buffer_words(case, device)
    assert abs(words * 4 - free * case.params["share"]) <= 64 + 0.01 * free
    assert words * 4 != int(case.params.get("mib", 8) * (1 << 20))


def test_calibration_is_measured_once_per_device_type_and_rounded():
    load_or_skip()
    first = sizing.stream_bandwidth(torch.device("testdev", 0))
    assert sizing.stream_bandwidth(torch.device("testdev", 1)) == first
    assert first > 0 and float(first).hex().startswith("0x1.0000000000000p")
