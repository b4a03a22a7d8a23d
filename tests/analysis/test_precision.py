"""Catalog sweeps on virtual CPU chips, judged by chip and by stack: wrong chips are outvoted,
a less precise stack is a stack finding and never quarantines a chip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from probes.catalog import write_catalog
from probes.catalog_probe import CatalogProbe
from sdc.analysis.precision import (
    PrecisionConfig,
    PrecisionResult,
    find_software_changed,
    load_precision_results,
    stack_findings,
)
from sdc.config import Settings
from sdc.faults import parse_faults
from sdc.node.devices import discover
from sdc.quarantine.pipeline import analyze_store
from sdc.records import stack_hash
from sdc.sweep.node_sweep import NodeSweepOptions, node_sweep

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def catalog_file(tmp_path_factory) -> Path:
    from probes.harvest_models import harvest_catalog

    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, vocab_size=100)
    catalog = harvest_catalog(config, batch=1, seq_len=8, dtype="fp32", budget=1)
    path = tmp_path_factory.mktemp("catalog") / "llama.json"
    write_catalog(catalog, path)
    return path


def on_stack(handle, driver: str):
    """The chip as if it ran another software stack (a second platform in the fleet)."""
    stack = {**handle.chip.stack, "driver": driver}
    return dataclasses.replace(handle, chip=dataclasses.replace(handle.chip, stack=stack, stack_hash=stack_hash(stack)))


def sweep(store, catalog_file, devices: str, inject=(), second_stack: tuple[str, ...] = (), seed: int = 0):
    chips = discover(devices)
    chips = [on_stack(h, "vendor-b 2.0") if h.name in second_stack else h for h in chips]
    options = NodeSweepOptions(devices=devices, repeats=2, seed=seed, faults=parse_faults(inject), catalog=catalog_file)
    probe = CatalogProbe()
    probe.path = str(catalog_file)
    return node_sweep(store, options, [probe], chips=chips)


def analysis(store):
    return analyze_store(store, Settings(database_url=store.url, data_dir=Path("."), outbox_dir=Path("."), tables={}))


def test_healthy_chips_pass_every_catalog_case(store, catalog_file):
    result = sweep(store, catalog_file, "cpu:0,cpu:1,cpu:2")
    statuses = [c.statuses for c in result.summary.chips]
    assert all(s["mismatch"] == 0 and s["error"] == 0 and s["ok"] >= 20 for s in statuses), statuses
    assert int(result.summary.exit_code) == 0
    report = analysis(store)
    assert report.verdicts == [] and int(report.exit_code) == 0
    results, _ = load_precision_results(store.engine())
    assert all(r.error_stats["tolerance_row"].endswith("@builtin-v1") for r in results)
    assert stack_findings(results) == []


def test_a_wrong_chip_is_caught_by_the_cohort_vote(store, catalog_file):
    # Low mantissa bits: inside most error bounds, so only the cohort digest vote sees it.
    sweep(store, catalog_file, "cpu:0,cpu:1,cpu:2", inject=["cpu:2:bitflip:rate=1,sticky=1,bits=0-1"])
    report = analysis(store)
    wrong = [v for v in report.verdicts if v.kind == "wrong"]
    assert [v.chip_id for v in wrong] == [discover("cpu:2")[0].chip.chip_id]
    assert wrong[0].details["against_majority"] >= 20
    results, _ = load_precision_results(store.engine())
    assert [f for f in stack_findings(results) if f.kind == "bound_broken_by_stack"] == []


def test_a_less_precise_stack_is_a_stack_finding_and_quarantines_no_chip(store, catalog_file):
    faults = ["cpu:2:lowprec:bits=12", "cpu:3:lowprec:bits=12"]
    for seed in (0, 1):
        sweep(store, catalog_file, "cpu:0,cpu:1,cpu:2,cpu:3", inject=faults, second_stack=("cpu:2", "cpu:3"), seed=seed)
    report = analysis(store)
    assert report.verdicts == [] and report.transitions == [] and int(report.exit_code) == 0
    results, labels = load_precision_results(store.engine())
    findings = stack_findings(results, PrecisionConfig(), labels)
    slow_stack = discover("cpu:2")[0]
    b = on_stack(slow_stack, "vendor-b 2.0").chip.stack_hash
    less = [f for f in findings if f.kind == "less_precise"]
    assert len(less) >= 20 and all(f.stack == b and f.ratio >= 2 for f in less)
    gemm = next(f for f in less if f.case["name"] == "mm")
    assert "mean error is" in gemm.summary and len(gemm.distributions) == 2
    assert all(d["n"] == 4 for d in gemm.distributions.values())  # 2 chips x 2 seeds per platform
    broken = [f for f in findings if f.kind == "bound_broken_by_stack"]
    assert broken and all(f.stack == b and len(f.chips) == 2 for f in broken)


def test_two_chips_breaking_the_bound_identically_are_a_stack_finding_not_two_faults(store, catalog_file):
    sweep(store, catalog_file, "cpu:0,cpu:1", inject=["cpu:0:lowprec:bits=8", "cpu:1:lowprec:bits=8"])
    report = analysis(store)
    assert report.verdicts == [] and report.transitions == []
    results, _ = load_precision_results(store.engine())
    broken = [f for f in stack_findings(results) if f.kind == "bound_broken_by_stack"]
    assert broken and all(len(f.chips) == 2 and "not a chip" in f.summary for f in broken)


def test_one_chip_of_two_breaking_the_bound_is_still_blamed(store, catalog_file):
    sweep(store, catalog_file, "cpu:0,cpu:1", inject=["cpu:1:lowprec:bits=8"])
    report = analysis(store)
    assert [v.chip_id for v in report.verdicts if v.kind == "wrong"] == [discover("cpu:1")[0].chip.chip_id]


def _result(chip: str, stack: str, digest: str, at: float) -> PrecisionResult:
    return PrecisionResult(
        result_id=f"{chip}-{stack}", chip_id=chip, chip_model="H200", stack_hash=stack, probe="catalog",
        probe_version=1, case={"name": "mm", "dtype": "bf16", "shape": [4096, 4096]}, seed=0, status="ok",
        digest=digest, distinct=1, max_rel_err=1e-3, observed_at=at,
    )


def test_every_chip_changing_digest_after_an_upgrade_is_software():
    before = [_result(c, "old", "d1", 1.0) for c in ("a", "b", "c")]
    after = [_result(c, "new", "d2", 2.0) for c in ("a", "b", "c")]
    (finding,) = find_software_changed(before + after, {"old": "cuda 12.4", "new": "cuda 12.8"})
    assert finding.kind == "software_changed" and finding.stack == "new" and finding.reference_stack == "old"
    assert "software changed the result" in finding.summary and "not a hardware fault" in finding.summary
    # One chip disagreeing on the new stack: no unanimous new answer, so no software finding.
    split = after[:2] + [_result("c", "new", "d3", 2.0)]
    assert find_software_changed(before + split) == []
    # Same digest after the upgrade: nothing changed.
    assert find_software_changed(before + [_result(c, "new", "d1", 2.0) for c in ("a", "b", "c")]) == []


def test_sdc_precision_prints_stack_findings_and_exits_0(store, catalog_file, tmp_path):
    import json
    import subprocess
    import sys

    faults = ["cpu:1:lowprec:bits=12"]
    sweep(store, catalog_file, "cpu:0,cpu:1", inject=faults, second_stack=("cpu:1",))
    env = {"XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    base = [sys.executable, "-m", "sdc", "--db", store.url]
    text = subprocess.run(base + ["precision"], capture_output=True, text=True, env=env, timeout=120)
    assert text.returncode == 0, text.stderr
    assert "less precise than the reference" in text.stdout and "no chip was quarantined" in text.stdout
    assert "tolerance row" in text.stdout
    done = subprocess.run(base + ["--json", "precision"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0
    report = json.loads(done.stdout)
    assert {f["kind"] for f in report["findings"]} >= {"less_precise"}
    assert all(len(f["distributions"]) == 2 for f in report["findings"] if f["kind"] == "less_precise")
    bad = subprocess.run(base + ["harvest", "--hf-config", str(tmp_path / "none.json"), "-o", str(tmp_path / "c.json")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "no such config file" in bad.stderr


def test_report_has_a_precision_section_in_json_and_html(store, catalog_file):
    import json

    import jsonschema

    from sdc.reports.html_report import render_html
    from sdc.reports.json_report import render_json
    from sdc.reports.read import build_report

    sweep(store, catalog_file, "cpu:0,cpu:1,cpu:2,cpu:3", inject=["cpu:2:lowprec:bits=12", "cpu:3:lowprec:bits=12"],
          second_stack=("cpu:2", "cpu:3"))
    analysis(store)
    report = build_report(store.engine())
    assert report.flagged == ()  # a stack finding flags no chip
    document = json.loads(render_json(report))
    schema = json.loads((Path(__file__).parents[2] / "docs" / "schema" / "report.json").read_text())
    jsonschema.validate(document, schema)
    kinds = {f["kind"] for f in document["precision"]}
    assert "less_precise" in kinds
    page = render_html(report)
    assert "Precision across platforms and stacks" in page and page.count("<svg") >= 2


def _noisy(platform: str, scale: float, n: int, rng) -> list[PrecisionResult]:
    return [
        dataclasses.replace(_result(f"{platform}{i}", platform, f"d{platform}{i}", 1.0),
                            error_stats={"mean_rel_err": float(scale * rng.lognormal(0.0, 0.3))})
        for i in range(n)
    ]


def test_less_precise_is_rare_between_equal_platforms_and_found_at_three_times_over_many_seeds():
    import numpy as np

    from sdc.analysis.precision import find_less_precise

    cfg = PrecisionConfig()
    false, found = 0, 0
    trials = 300
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        same = _noisy("a", 1e-4, 6, rng) + _noisy("b", 1e-4, 6, rng)
        false += bool(find_less_precise(same, cfg))
        worse = _noisy("a", 1e-4, 6, rng) + _noisy("b", 3e-4, 6, rng)
        hits = find_less_precise(worse, cfg)
        found += bool(hits) and all(f.stack == "b" for f in hits)
    assert false == 0  # equal platforms never reach a 2x ratio of means with 6 samples each
    assert found >= 0.95 * trials


def test_agent_and_sweep_take_a_catalog(catalog_file, tmp_path):
    import subprocess
    import sys

    from sdc.agent.config import agent_config

    settings = Settings(database_url="sqlite://", data_dir=tmp_path, outbox_dir=tmp_path,
                        tables={"agent": {"sweep": "0 3 * * 0", "catalog": str(catalog_file)}})
    assert agent_config(settings, {}).catalog == catalog_file
    env = {"XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    db = f"sqlite:///{tmp_path / 'sdc.db'}"
    base = [sys.executable, "-m", "sdc", "--db", db]
    subprocess.run(base + ["db", "upgrade"], check=True, capture_output=True, env=env, timeout=120)
    (tmp_path / "broken.json").write_text('{"catalog_version": 1, "model": {}, "cases": "none"}')
    bad = subprocess.run(base + ["sweep", "--devices", "cpu:0", "--catalog", str(tmp_path / "broken.json")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "cases: must be a list" in bad.stderr and "Traceback" not in bad.stderr
    done = subprocess.run(base + ["--json", "sweep", "--devices", "cpu:0,cpu:1", "--probes", "gemm", "--catalog", str(catalog_file)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    chips = json.loads(done.stdout)["chips"]
    assert all(c["statuses"]["ok"] >= 25 and c["statuses"].get("mismatch", 0) == 0 for c in chips), chips
