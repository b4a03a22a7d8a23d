"""The Slurm hand-off against a real single-node Slurm: ``sdc export slurm --apply`` and the
shipped HealthCheckProgram wrapper drain, leave foreign reasons alone, resume only what sdc
drained, and drain nothing for a circuit-breaker trip."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from sdc.cli import cli
from sdc.records import QuarantineEvent, new_id
from sdc.store import Store
from sdc.store.migrate import upgrade

from tests import fleets as fleet
from tests.handoffs.real_programs import NODE, Slurm, require, wait_for

ROOT = Path(__file__).parents[2]
T3 = fleet.T0 + timedelta(days=3)


def ev(chip_id, to_state, from_state="healthy", offset=0, **details):
    return QuarantineEvent(event_id=new_id(), chip_id=chip_id, from_state=from_state, to_state=to_state, actor="sdc-analysis",
                           reason=f"moved to {to_state}", at=T3 + timedelta(minutes=offset), details=details)


@pytest.fixture
def cluster(tmp_path):
    slurm = Slurm(tmp_path / "slurm")
    yield slurm
    slurm.close()


@pytest.fixture
def node_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'sdc.db'}"
    upgrade(url)
    store = Store(url, tmp_path / "outbox")
    store.write([fleet.chip(NODE, i) for i in range(4)])
    yield store
    store.dispose()


def export(store, cluster, monkeypatch, *args):
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    result = CliRunner().invoke(cli, ["--db", store.url, "export", "slurm", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_export_slurm_drains_reapplies_as_a_no_op_and_resumes_only_its_own(cluster, node_store, monkeypatch):
    chip = f"GPU-{NODE}-00"
    node_store.write([ev(chip, "quarantined", kind="wrong", severity="critical")])
    export(node_store, cluster, monkeypatch, "--apply")
    state, reason = cluster.node()
    assert state.startswith("drain") and reason == f"SDC: {chip} wrong/critical quarantined #0"
    assert "already drained by sdc" in export(node_store, cluster, monkeypatch, "--apply")
    assert cluster.node() == (state, reason)

    node_store.write([ev(chip, "released", "quarantined", offset=1)])
    export(node_store, cluster, monkeypatch, "--apply")
    wait_for(lambda: cluster.node() == ("idle", ""), "the node resuming")

    # Reasons that are not sdc's stay exactly as they are, drain or no drain.
    node_store.write([ev(chip, "quarantined", "released", offset=2, kind="wrong", severity="critical")])
    for foreign in ("maintenance", "NHC: disk full"):
        cluster.scontrol("update", f"NodeName={NODE}", "State=DRAIN", f"Reason={foreign}")
        assert "is not sdc's" in export(node_store, cluster, monkeypatch, "--apply")
        assert cluster.node()[1] == foreign
        cluster.scontrol("update", f"NodeName={NODE}", "State=RESUME")
    node_store.write([ev(chip, "released", "quarantined", offset=3)])
    cluster.scontrol("update", f"NodeName={NODE}", "State=DRAIN", "Reason=maintenance")
    export(node_store, cluster, monkeypatch, "--apply")  # released, but the drain is the admin's
    assert cluster.node()[1] == "maintenance"


def test_a_breaker_trip_drains_no_node(cluster, node_store, monkeypatch):
    node_store.write([ev(f"GPU-{NODE}-0{i}", "suspect", breaker=True, kind="wrong", severity="critical") for i in range(4)])
    assert "nothing to change" in export(node_store, cluster, monkeypatch, "--apply")
    assert cluster.node() == ("idle", "")


def test_the_health_check_wrapper_drains_and_resumes_under_slurmd(tmp_path, node_store):
    require("munged", "slurmctld", "slurmd")
    calls = tmp_path / "calls"
    shim = tmp_path / "sdc-shim"  # counts runs, so the test knows slurmd ran the check
    shim.write_text(f"#!/bin/sh\necho run >> {calls}\nexec {ROOT / '.venv' / 'bin' / 'sdc'} \"$@\"\n")
    shim.chmod(0o755)
    config = tmp_path / "config.toml"
    config.write_text(f'database_url = "{node_store.url}"\n')
    defaults = tmp_path / "defaults"
    wrapper = tmp_path / "sdc-healthcheck"
    wrapper.write_text((ROOT / "docs" / "nhc" / "sdc-healthcheck").read_text().replace("/etc/default/sdc-healthcheck", str(defaults)))
    wrapper.chmod(0o755)
    slurm = Slurm(tmp_path / "slurm", health_check=wrapper, health_check_interval=1)
    try:
        defaults.write_text(f"SDC_BIN={shim}\nSDC_CONFIG={config}\nSDC_HOSTNAME={NODE}\nSLURM_NODE={NODE}\nSLURM_CONF={slurm.conf}\n")
        runs = lambda: len(calls.read_text().splitlines()) if calls.exists() else 0  # noqa: E731
        chip = f"GPU-{NODE}-02"
        node_store.write([ev(chip, "quarantined", kind="inconsistent", severity="high")])
        wait_for(lambda: slurm.node()[1].startswith("SDC: "), "the wrapper draining the node", logs=slurm.logs)
        assert slurm.node()[1] == f"SDC: {chip} inconsistent/high quarantined #2"
        node_store.write([ev(chip, "released", "quarantined", offset=1)])
        wait_for(lambda: slurm.node() == ("idle", ""), "the wrapper resuming the node", logs=slurm.logs)
        # A breaker trip: the wrapper runs, the node stays up.
        node_store.write([ev(f"GPU-{NODE}-0{i}", "suspect", breaker=True, offset=2, kind="wrong", severity="critical") for i in range(4)])
        seen = runs()
        wait_for(lambda: runs() >= seen + 2, "two more health checks", logs=slurm.logs)
        assert slurm.node() == ("idle", "")
        # A foreign drain is left alone by the wrapper too.
        node_store.write([ev(chip, "quarantined", "suspect", offset=3, kind="wrong", severity="critical")])
        slurm.scontrol("update", f"NodeName={NODE}", "State=DRAIN", "Reason=maintenance")
        seen = runs()
        wait_for(lambda: runs() >= seen + 2, "two more health checks", logs=slurm.logs)
        assert slurm.node()[1] == "maintenance"
    finally:
        slurm.close()
