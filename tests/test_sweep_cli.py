"""``sdc sweep`` end to end on virtual CPU chips: exit codes, the chip named, bad input."""

import json

from click.testing import CliRunner

from sdc.cli import cli


def test_injected_bitflip_exits_1_and_names_the_chip_without_it_exits_0(sdc_env, migrated_url):
    runner = CliRunner()
    args = ["--db", migrated_url, "sweep", "--devices", "cpu:0,cpu:1,cpu:2", "--suite", "quick"]
    faulty = runner.invoke(cli, args + ["--inject", "cpu:1:bitflip:rate=1"])
    assert faulty.exit_code == 1, faulty.output
    fault_lines = [line for line in faulty.output.splitlines() if "FAULT" in line]
    assert len(fault_lines) == 1 and "cpu:1" in fault_lines[0]
    assert "cpu:1: gemm/square fp32: mismatch" in faulty.output
    clean = runner.invoke(cli, args)
    assert clean.exit_code == 0, clean.output
    assert "FAULT" not in clean.output


def test_sdc_inject_environment_and_json_output(sdc_env, migrated_url, monkeypatch):
    monkeypatch.setenv("SDC_INJECT", "cpu:0:bitflip:rate=1,probe=memory")
    result = CliRunner().invoke(cli, ["--json", "--db", migrated_url, "sweep", "--devices", "cpu:0", "--probes", "memory"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["status"] == "complete" and report["chips"][0]["statuses"] == {"mismatch": 1}
    assert "failing words" in report["chips"][0]["failures"][0]


def test_bad_inject_and_unknown_chip_or_probe_are_clear_errors(sdc_env, migrated_url):
    runner = CliRunner()
    base = ["--db", migrated_url, "sweep", "--devices", "cpu:0"]
    bad = runner.invoke(cli, base + ["--inject", "cpu:0:melt"])
    assert bad.exit_code == 2 and "unknown fault kind 'melt'" in bad.output
    stray = runner.invoke(cli, base + ["--inject", "cpu:7:hang"])
    assert stray.exit_code == 2 and "cpu:7" in stray.output and "does not probe" in stray.output
    probe = runner.invoke(cli, base + ["--probes", "gemm,nosuch"])
    assert probe.exit_code == 2 and "unknown probe(s) nosuch" in probe.output
