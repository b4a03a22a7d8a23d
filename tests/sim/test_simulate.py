"""The simulator: what it plants is what the ground truth says, and its records are valid."""

import json

import numpy as np
import pytest

from sdc.sim.fleet import FleetSpec, SimulatedFleet, parse_faults
from sdc.store.ingest import read_files


def test_planted_faults_show_in_the_data_as_described():
    fleet = SimulatedFleet(FleetSpec(chips=64, sweeps=6, onset_max=1, faults={"persistent": 1, "slow": 1, "nondeterministic": 1}), seed=3)
    truth = fleet.truth()
    assert sorted(t["fault"] for t in truth.values()) == ["nondeterministic", "persistent", "slow"]
    ev = fleet.evidence()
    code = {c: i for i, c in enumerate(fleet.chip_ids)}
    for chip, t in truth.items():
        mine = (ev.chip == code[chip]) & (fleet.sweep_round[ev.sweep] > t["onset_sweep"])
        if t["fault"] == "persistent":
            assert (ev.digest[mine] != 0).any() and (ev.distinct[mine] == 1).all()
        elif t["fault"] == "nondeterministic":
            unit = mine & np.array([label.startswith(t["unit"] + "/") for label in ev.cohort_labels])[ev.cohort]
            assert (ev.distinct[unit] > 1).mean() > 0.5 and (ev.distinct[mine & ~unit] == 1).all()
        else:
            others = ~np.isin(ev.chip, list(code[c] for c in truth)) & np.isin(ev.slow_cohort, ev.slow_cohort[mine])
            ratio = np.nanmedian(ev.throughput[mine]) / np.nanmedian(ev.throughput[others])
            assert ratio < 0.95


def test_records_are_valid_json_lines_that_ingest_accepts(tmp_path):
    fleet = SimulatedFleet(FleetSpec(chips=16, sweeps=2, incomplete_rate=0.5, error_rate=0.05), seed=1)
    path = tmp_path / "f.jsonl"
    count = fleet.write_jsonl(path)
    records = read_files([str(path)]).records
    assert len(records) == count
    kinds = {r.KIND for r in records}
    assert kinds == {"chip", "sweep", "probe_result"}
    assert {r.status for r in records if r.KIND == "sweep"} == {"complete", "incomplete"}
    fleet.write_truth(tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text()) == {}


def test_fault_list_parsing_names_the_problem():
    assert parse_faults("slow=2, persistent=1") == {"slow": 2, "persistent": 1}
    with pytest.raises(ValueError, match="needs a count"):
        parse_faults("slow")


def test_simulate_help_lists_every_fault_kind_the_simulator_plants():
    from click.testing import CliRunner

    from sdc.cli import cli
    from sdc.sim.fleet import FAULT_KINDS

    text = " ".join(CliRunner().invoke(cli, ["simulate", "--help"]).output.split())
    assert all(kind in text.split("kinds: ", 1)[1] for kind in FAULT_KINDS) and "unreliable" in text
