"""The report reads the fleet's latest analysis and shows the digest a healthy chip gives."""

from __future__ import annotations

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
