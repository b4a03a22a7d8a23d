"""The report reads the fleet's latest analysis and shows the digest a healthy chip gives."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

from click.testing import CliRunner

from sdc.cli import cli
from sdc.records import ProbeResult
from sdc.reports import build_report, render

from tests import fleets as fleet


def test_an_old_verdict_the_latest_analysis_did_not_repeat_unflags_the_chip(store):
    store.write(fleet.fleet_records())
    old = fleet.verdict("GPU-node01-03", "slow", "low", analysis_id="a-old")
    new = replace(fleet.verdict("GPU-node00-01", "slow", "low", analysis_id="a-new"), created_at=old.created_at + timedelta(hours=1))
    store.write([old])
    assert CliRunner().invoke(cli, ["--db", store.url, "report"]).exit_code == 1
    store.write([new])
    chips = {c.identity.chip_id: c for c in build_report(store.engine()).chips}
    assert not chips["GPU-node01-03"].flagged and chips["GPU-node00-01"].flagged


def test_expected_digest_is_the_cohort_majority_not_the_fp64_reference(store):
    records = [replace(r, reference_digest="fp64-" + "0" * 40) if isinstance(r, ProbeResult) else r for r in fleet.faulty_fleet()]
    good, bad = "d-good-" + "a" * 40 + "1234", "d-good-" + "a" * 40 + "9999"
    records = [replace(r, digest={"d-good": good, "d-bad": bad}.get(r.digest, r.digest)) if isinstance(r, ProbeResult) else r for r in records]
    store.write(records)
    report = build_report(store.engine())
    (evidence,) = next(c for c in report.chips if c.identity.chip_id == "GPU-node00-00").evidence
    assert (evidence.expected_digest, evidence.observed_digest) == (good, bad)
    # Digests that share a long prefix differ at the end: the whole digest is shown.
    page, markdown = render(report, "html"), render(report, "markdown")
    assert good in page and bad in page and good in markdown and bad in markdown


def test_the_cards_evidence_command_exports_only_that_chip_and_ingests_alone(faulty_store, tmp_path):
    from sdc.store import Store
    from sdc.store.migrate import upgrade
    from sdc.store.reader import iter_records

    chip = "GPU-node00-00"
    report = build_report(faulty_store.engine())
    card = next(c for c in report.chips if c.identity.chip_id == chip)
    (command,) = [c for c in card.action.commands if c.startswith("sdc export --chip")]
    assert command == f"sdc export --chip {chip} -o sdc-evidence-{chip}.jsonl"
    out = tmp_path / "one.jsonl"
    result = CliRunner().invoke(cli, ["--db", faulty_store.url, "export", "--chip", chip, "-o", str(out)])
    assert result.exit_code == 0, result.output
    everything = list(iter_records(faulty_store.engine()))
    mine = [r for r in everything if getattr(r, "chip_id", None) == chip]
    lines = out.read_text().splitlines()
    assert len(lines) == len(mine) + 3  # and the three sweeps its results belong to
    assert len(lines) < len(everything) / 2
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(fresh)
    loaded = CliRunner().invoke(cli, ["--db", fresh, "ingest", str(out)])
    assert loaded.exit_code == 0, loaded.output
    other = Store(fresh, tmp_path / "outbox")
    try:
        assert {getattr(r, "chip_id", chip) for r in iter_records(other.engine())} == {chip}
    finally:
        other.dispose()


def test_an_analysis_that_finds_nothing_unflags_the_old_verdicts_everywhere(store):
    """"Latest" is the fleet's latest analysis run, also one that stored no verdict: after a
    clean ``sdc analyze`` an old low verdict no longer flags the chip in the report, the
    ``sdc check`` line or the Prometheus metrics."""
    store.write(fleet.fleet_records())
    store.write([fleet.verdict("GPU-node01-03", "slow", "low", analysis_id="a-old")])
    run = CliRunner()
    before = run.invoke(cli, ["--db", store.url, "report", "--format", "json"])
    assert before.exit_code == 1, before.output
    assert "GPU-node01-03" in {c["chip_id"] for c in json.loads(before.output)["chips"] if c["verdicts"]}
    verdict_lines = lambda out: [line for line in out.splitlines() if line.startswith(("sdc_chip_verdict{", "sdc_verdict_score{"))]
    assert verdict_lines(run.invoke(cli, ["--db", store.url, "export", "prometheus", "--all-hosts"]).output)

    analysed = run.invoke(cli, ["--db", store.url, "analyze", "--since", fleet.T0.isoformat()])
    assert analysed.exit_code == 0, analysed.output
    after = run.invoke(cli, ["--db", store.url, "report", "--format", "json"])
    assert after.exit_code == 0, after.output
    assert [c["chip_id"] for c in json.loads(after.output)["chips"] if c["verdicts"]] == []
    check = run.invoke(cli, ["--db", store.url, "check", "--host", "node01"])
    assert check.exit_code == 0 and "slow" not in check.output, check.output
    metrics = run.invoke(cli, ["--db", store.url, "export", "prometheus", "--all-hosts"])
    assert metrics.exit_code == 0, metrics.output
    assert verdict_lines(metrics.output) == []


def test_a_dry_run_analysis_is_not_the_latest(store):
    store.write(fleet.fleet_records())
    store.write([fleet.verdict("GPU-node01-03", "slow", "low", analysis_id="a-old")])
    run = CliRunner()
    assert run.invoke(cli, ["--db", store.url, "analyze", "--dry-run", "--since", fleet.T0.isoformat()]).exit_code == 0
    assert run.invoke(cli, ["--db", store.url, "report"]).exit_code == 1


def _wrong_chip_fleet(chip_id="GPU-node00-00"):
    records = fleet.fleet_records(hosts=12)  # two quarantines in 48 chips: under the breaker's 5 %
    return [replace(r, status="mismatch", digest="d-bad") if isinstance(r, ProbeResult) and r.chip_id == chip_id else r for r in records]


def test_a_release_sticks_in_the_report_until_new_evidence(store):
    """Quarantine, release, analyse again on the same evidence: the report shows the chip
    released with nothing to do and exits 0; a faulty result after the release flags it again."""
    chip = "GPU-node00-00"
    store.write(_wrong_chip_fleet(chip))
    run = CliRunner()
    since = ["--since", fleet.T0.isoformat()]

    def report():
        result = run.invoke(cli, ["--db", store.url, "report", "--format", "json"])
        return result.exit_code, next(c for c in json.loads(result.output)["chips"] if c["chip_id"] == chip)

    assert run.invoke(cli, ["--db", store.url, "analyze", *since]).exit_code == 1
    code, card = report()
    assert code == 1 and card["state"] == "quarantined" and card["verdicts"]
    metrics = run.invoke(cli, ["--db", store.url, "export", "prometheus", "--all-hosts"]).output
    assert [line for line in metrics.splitlines() if line.startswith("sdc_chip_verdict{") and f'UUID="{chip}"' in line]
    released = run.invoke(cli, ["--db", store.url, "quarantine", "release", chip, "--by", "alice", "--reason", "reseated"])
    assert released.exit_code == 0, released.output
    assert run.invoke(cli, ["--db", store.url, "analyze", *since]).exit_code == 0
    code, card = report()
    assert code == 0, card
    assert card["state"] == "released" and card["verdicts"] == [] and card["action"]["kind"] == "none"
    metrics = run.invoke(cli, ["--db", store.url, "export", "prometheus", "--all-hosts"]).output
    assert f'sdc_chip_state{{Hostname="node00",UUID="{chip}"' in metrics
    assert not [line for line in metrics.splitlines() if line.startswith("sdc_chip_verdict{") and f'UUID="{chip}"' in line]

    # New evidence after the release: the chip is flagged (and quarantined) again.
    from sdc.records import Sweep, new_id, utcnow

    at = utcnow()
    sweep = Sweep(new_id(), "node00", "quick", at, "complete", "0.1", finished_at=at)
    store.write([sweep] + [fleet.result(sweep.sweep_id, f"GPU-node00-0{i}", at, "mismatch" if i == 0 else "ok",
                                        "d-bad" if i == 0 else "d-good") for i in range(4)])
    assert run.invoke(cli, ["--db", store.url, "analyze", *since]).exit_code == 1
    code, card = report()
    assert code == 1 and card["state"] == "quarantined" and card["verdicts"]


def test_quarantine_show_lists_the_verdicts_of_the_latest_analysis_once(store):
    chip = "GPU-node00-00"
    store.write(_wrong_chip_fleet(chip))
    run = CliRunner()
    for _ in range(3):  # the same evidence judged three times: one verdict to read, not three
        assert run.invoke(cli, ["--db", store.url, "analyze", "--since", fleet.T0.isoformat()]).exit_code in (0, 1)
    shown = run.invoke(cli, ["--db", store.url, "--json", "quarantine", "show", chip])
    assert shown.exit_code == 0, shown.output
    assert [(v["kind"], v["severity"]) for v in json.loads(shown.output)["verdicts"]] == [("wrong", "critical")]
    text = run.invoke(cli, ["--db", store.url, "quarantine", "show", chip]).output
    assert text.count("critical wrong") == 1 and "verdicts of the latest analysis:" in text
