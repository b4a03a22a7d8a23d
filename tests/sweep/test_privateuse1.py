"""A quick sweep of the two devices of a PrivateUse1 backend (``testdev``), end to end.

``sdc sweep --backend-module tests.testdev.backend`` with torch's plug-in autoload off, and a
bit flip injected into every output of ``testdev:1``: the sweep completes, no case times out
or errors (the device's gaps are skips with their reason), only ``testdev:1`` is a fault, and
the collectives ran over gloo with host staging on both chips.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sdc.store import Store
from sdc.store.reader import iter_records
from tests.testdev import MODULE, subprocess_env, why_unavailable

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def drill(tmp_path_factory):
    if why_unavailable():
        pytest.skip(why_unavailable())
    base = tmp_path_factory.mktemp("pu1")
    url = f"sqlite:///{base / 'sdc.db'}"
    env = subprocess_env(TORCH_DEVICE_BACKEND_AUTOLOAD="0", SDC_CONFIG="/dev/null", SDC_DATA_DIR=str(base))
    env.pop("SDC_BACKEND_MODULES", None)
    sdc = [sys.executable, "-m", "sdc", "--db", url]
    subprocess.run([*sdc, "db", "upgrade"], env=env, check=True, capture_output=True, timeout=300)
    run = subprocess.run(
        [*sdc, "--json", "sweep", "--backend-module", MODULE, "--inject", "testdev:1:bitflip:rate=1"],
        env=env, capture_output=True, text=True, timeout=1200,
    )
    store = Store(url)
    records = list(iter_records(store.engine()))
    store.dispose()
    return run, records


def test_the_drill_names_the_faulty_device_only(drill):
    run, _ = drill
    assert run.returncode == 1, run.stderr
    summary = json.loads(run.stdout)
    chips = {c["name"]: c for c in summary["chips"]}
    assert set(chips) == {"testdev:0", "testdev:1"}
    assert chips["testdev:1"]["statuses"].get("mismatch", 0) > 0
    assert chips["testdev:0"]["statuses"].get("mismatch", 0) == 0
    assert summary["collectives"] == "collectives over testdev:0, testdev:1"


def test_no_case_times_out_or_errors_and_gaps_are_skips_with_a_reason(drill):
    _, records = drill
    (sweep,) = [r for r in records if r.KIND == "sweep"]
    assert sweep.status == "complete"
    results = [r for r in records if r.KIND == "probe_result"]
    assert results
    assert {r.status for r in results} <= {"ok", "mismatch", "skipped"}, [(r.probe, r.case, r.message) for r in results if r.status in ("error", "timeout")]
    for r in results:
        if r.status == "skipped":
            assert r.message.startswith("not supported here: "), r.message
    skipped = {(r.probe, r.case["dtype"]) for r in results if r.status == "skipped"}
    assert ("gemm", "tf32") in skipped and ("gemm", "fp8e4m3") in skipped
    healthy = [r for r in results if r.chip_id.endswith(":0")]
    assert {r.probe for r in healthy if r.status == "ok"} >= {"gemm", "attention", "norms", "elementwise", "memory", "transfer", "collective"}


def test_collectives_judge_both_chips_over_host_staging(drill):
    _, records = drill
    collective = [r for r in records if r.KIND == "probe_result" and r.probe == "collective"]
    assert {r.telemetry["c10d_backend"] for r in collective} == {"gloo (host staging)"}
    by_chip = {}
    for r in collective:
        by_chip.setdefault(r.chip_id.rsplit(":", 1)[-1], set()).add(r.status)
    assert by_chip == {"0": {"ok"}, "1": {"mismatch"}}
