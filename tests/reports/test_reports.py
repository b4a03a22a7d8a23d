"""The quarantine report in all four formats: schema-valid JSON, escaped data, self-contained HTML."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from sdc.cli import cli
from sdc.reports import build_report, render
from sdc.reports.actions import recommend

from tests.fleets import XSS

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "schema" / "report.json").read_text())


def test_every_format_works_on_empty_healthy_and_faulty_fleets(any_fleet):
    kind, store = any_fleet
    report = build_report(store.engine(), source="test")
    expected_flagged = {"empty": 0, "healthy": 0, "faulty": 6}[kind]
    assert len(report.flagged) == expected_flagged
    data = json.loads(render(report, "json"))
    jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(data)
    assert data["summary"]["flagged"] == expected_flagged
    table = render(report, "table")
    markdown = render(report, "markdown")
    page = render(report, "html")
    assert f"{len(report.chips)} chips" in table and f"{len(report.chips)} chips" in markdown
    if expected_flagged:
        assert "GPU-node00-00" in table and "GPU-node00-00" in markdown and "GPU-node00-00" in page
    else:
        assert "no chip is flagged" in table.lower() and "No chip is flagged" in markdown and "No chip is flagged" in page


def test_faulty_report_content(faulty_report):
    chips = {c.identity.chip_id: c for c in faulty_report.chips}
    wrong = chips["GPU-node00-00"]
    assert wrong.state == "quarantined" and wrong.action.kind == "replace"
    (evidence,) = wrong.evidence
    # Expected is the cohort majority (the healthy chips' digest); the chip's digest differs.
    assert (evidence.expected_digest, evidence.observed_digest) == ("d-good", "d-bad")
    assert evidence.reproduced and evidence.occurrences == 3
    assert wrong.failures == (("gemm", "bf16", 3),)
    assert len(wrong.mismatches_over_time) == 3
    assert wrong.throughput is not None and len(wrong.throughput.cohort) > 20
    assert chips["GPU-node01-01"].action.kind == "reset"
    assert chips["GPU-node02-02"].action.kind == "contact_vendor"
    assert chips["GPU-node02-03"].action.kind == "replace"  # retired
    assert chips["GPU-node01-02"].state == "released" and not chips["GPU-node01-02"].flagged
    dry = chips["GPU-node00-03"]
    assert dry.state == "healthy" and dry.proposed_state == "quarantined" and dry.provenance.dry_run
    assert dry.action.why.startswith("if the dry run is applied")
    assert faulty_report.state_counts == {"healthy": 7, "suspect": 1, "quarantined": 3, "released": 1, "retired": 1}


def test_data_strings_are_escaped_in_html_and_markdown(faulty_report):
    page = render(faulty_report, "html")
    markdown = render(faulty_report, "markdown")
    for text in (page, markdown):
        assert XSS not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    # The page runs no script at all and loads nothing from anywhere.
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.I)
    assert "url(http" not in page and "@import" not in page
    assert "default-src 'none'" in page
    assert page.count("<svg") >= 1 + 3  # the fleet plot and a chip's three plots


def test_table_prints_markup_like_names_literally(store):
    from tests import fleets as fleet

    weird = "[red]GPU-x[/red]"
    store.write([fleet.chip("n1", 0, chip_id=weird), fleet.event(weird, "quarantined", "suspect")])
    table = render(build_report(store.engine()), "table", width=200)
    assert weird in table


@pytest.mark.parametrize(
    "state, severities, vendor, kind, fragment",
    [
        ("healthy", [], "nvidia", "none", None),
        ("released", [], "nvidia", "none", None),
        ("suspect", ["medium"], "nvidia", "reset", "nvidia-smi --gpu-reset -i GPU-1"),
        ("quarantined", ["low", "medium"], "nvidia", "field_diagnostics", "dcgmi discovery -l | awk -v u=GPU-1"),
        ("quarantined", ["high"], "amd", "contact_vendor", "sdc export --chip GPU-1 -o sdc-evidence-GPU-1.jsonl"),
        ("quarantined", ["critical"], "nvidia", "replace", "sdc export slurm --apply --host node1"),
        ("retired", [], "cpu", "replace", "sdc export slurm --apply --host node1"),
    ],
)
def test_recommended_action_ladder(state, severities, vendor, kind, fragment):
    action = recommend("GPU-1", "node1", 3, vendor, state, severities)
    assert action.kind == kind
    if fragment:
        assert any(fragment in c for c in action.commands)
    # The GPU is named by its UUID, never by the CUDA ordinal NVML and DCGM number differently.
    assert not any(" -i 3" in c for c in action.commands)
    assert all(c.startswith(("ssh -- node1 ", "sdc ")) for c in action.commands)


@pytest.mark.parametrize("host, chip", [("-oProxyCommand=touch /tmp/x", "GPU-1"), ("node 1; rm -rf /", "GPU-1"),
                                        ("node1", "GPU-a'$(touch /tmp/x)'b"), ("node1\nreboot", "GPU-1")])
def test_no_command_is_recommended_for_a_hostile_name(host, chip):
    for state, severities in (("suspect", ["medium"]), ("quarantined", ["high"]), ("retired", [])):
        action = recommend(chip, host, 3, "nvidia", state, severities)
        assert action.kind == "withheld" and action.commands == () and "safe set" in action.why


def test_report_command_writes_each_format(faulty_store, tmp_path):
    runner = CliRunner()
    for fmt in ("json", "markdown", "html"):
        target = tmp_path / f"r.{fmt}"
        result = runner.invoke(cli, ["--db", faulty_store.url, "report", "--format", fmt, "-o", str(target)])
        assert result.exit_code == 1, result.output  # chips are flagged
        assert target.stat().st_size > 0
    result = runner.invoke(cli, ["--db", faulty_store.url, "report", "--host", "node01"])
    assert "GPU-node01-01" in result.output and "GPU-node00-00" not in result.output


def test_plot_text_from_the_data_is_escaped():
    from datetime import datetime, timezone

    from sdc.reports import plots
    from sdc.reports.model import Throughput

    svgs = [
        plots.failures([(XSS, "bf16 $x$", 2)], "c0"),
        plots.throughput(Throughput(XSS, XSS, "<b>/s", (1.0, 2.0), (1.5,) * 10), "c1"),
        plots.mismatches_over_time([(datetime(2026, 11, 1, tzinfo=timezone.utc), 1)], "c2"),
    ]
    for svg in svgs:
        assert svg.startswith("<svg") and "<script" not in svg and "<b>" not in svg
    assert "&lt;script&gt;" in svgs[0] and "$x$" in svgs[0]  # mathtext off: dollars stay literal
