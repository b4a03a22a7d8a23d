"""The commands end to end: simulate -> ingest -> analyze -> quarantine list/show/release/retire -> status."""

import json

from click.testing import CliRunner

from sdc.cli import cli


def run(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_simulated_fleet_through_analysis_and_quarantine(sdc_env):
    fleet, truth = str(sdc_env / "fleet.jsonl"), str(sdc_env / "truth.json")
    assert run("db", "upgrade")[0] == 0
    code, out = run("simulate", "--chips", "48", "--sweeps", "4", "--faults", "persistent=1", "--onset", "1", "-o", fleet, "--truth", truth)
    assert code == 0 and "1 planted faults" in out
    (bad_chip,) = json.load(open(truth))
    assert run("ingest", fleet)[0] == 0

    code, out = run("analyze", "--dry-run")
    assert code == 1 and "DRY RUN" in out and f"would move {bad_chip}: healthy -> quarantined" in out
    # What the slow test can resolve on this fleet, per chip model, where an operator reads it.
    floors = [line for line in out.splitlines() if line.startswith("slow test, ")]
    assert floors and all("chips differ by" in line and "found reliably from" in line for line in floors)
    assert json.loads(run("quarantine", "list", "--json")[1]) == []

    code, out = run("analyze")
    assert code == 1 and "critical" in out and bad_chip in out
    listed = json.loads(run("quarantine", "list", "--json")[1])
    assert [(row["chip_id"], row["state"], row["actor"]) for row in listed] == [(bad_chip, "quarantined", "sdc-analysis")]
    assert run("status")[0] == 1
    exported = str(sdc_env / "verdicts.jsonl")
    assert run("export", "--kind", "verdict", "--kind", "quarantine_event", "-o", exported)[0] == 0
    code, out = run("ingest", exported)  # verdicts are JSON lines like every record
    assert code == 0 and "verdict" in out

    code, out = run("quarantine", "release", bad_chip, "--by", "ana")
    assert code == 2 and "--reason" in out
    code, out = run("quarantine", "release", bad_chip, "--by", "ana", "--reason", "card reseated")
    assert code == 0 and "quarantined -> released" in out
    code, out = run("quarantine", "show", bad_chip)
    assert "released" in out and "card reseated" in out and "computes wrong results" in out
    code, out = run("status")
    assert code == 0 and "1 released" in out and "48 chips" in out

    assert run("quarantine", "retire", bad_chip, "--by", "ana", "--reason", "RMA")[0] == 0
    code, out = run("quarantine", "release", bad_chip, "--by", "ana", "--reason", "oops")
    assert code == 2 and "retired" in out


def test_json_analysis_and_bad_input_are_reported_clearly(sdc_env):
    assert run("db", "upgrade")[0] == 0
    fleet = str(sdc_env / "fleet.jsonl")
    assert run("simulate", "--chips", "16", "--sweeps", "2", "-o", fleet)[0] == 0
    assert run("ingest", fleet)[0] == 0
    code, out = run("--json", "analyze")
    report = json.loads(out)
    assert code == 0 and report["verdicts"] == [] and report["chips"] == 16 and report["exit_code"] == 0
    assert report["slow_floors"] and all(0 < f["threshold"] <= f["detectable"] < 1 for f in report["slow_floors"])
    code, out = run("analyze", "--since", "last tuesday")
    assert code == 2 and "ISO 8601" in out
    code, out = run("simulate", "--faults", "melted=1", "-o", fleet)
    assert code == 2 and "unknown fault kind 'melted'" in out
    (sdc_env / "config").mkdir(exist_ok=True)
    (sdc_env / "config" / "sdc").mkdir(exist_ok=True)
    (sdc_env / "config" / "sdc" / "config.toml").write_text("[analysis]\nbreaker_share = 'lots'\n")
    code, out = run("analyze")
    assert code == 2 and "breaker_share" in out
