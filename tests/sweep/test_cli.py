"""``sdc sweep`` end to end on three virtual CPU chips, every probe family in the quick suite.

Two sweeps serve the whole module (each takes seconds per chip): one with a bit flip injected
into every output of cpu:1, one without injection.
"""

import json

import pytest
from click.testing import CliRunner

from probes.registry import all_probes
from sdc.cli import cli
from sdc.store import Store
from sdc.store.migrate import upgrade
from sdc.store.reader import iter_records

FAMILIES = {"gemm", "attention", "conv", "norms", "elementwise", "memory", "transfer", "collective"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    url = f"sqlite:///{base / 'sdc.db'}"
    upgrade(url)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("XDG_DATA_HOME", str(base / "data"))
        env.setenv("XDG_CONFIG_HOME", str(base / "config"))
        env.delenv("SDC_INJECT", raising=False)
        runner = CliRunner()
        args = ["--db", url, "sweep", "--devices", "cpu:0,cpu:1,cpu:2", "--suite", "quick"]
        faulty = runner.invoke(cli, args + ["--inject", "cpu:1:bitflip:rate=1"])
        clean = runner.invoke(cli, args)
    store = Store(url)
    records = list(iter_records(store.engine()))
    store.dispose()
    sweeps = [r for r in records if r.KIND == "sweep"]
    results = {s.sweep_id: {} for s in sweeps}
    for r in records:
        if r.KIND == "probe_result":
            results[r.sweep_id].setdefault(r.chip_id.rsplit(":", 1)[-1], []).append(r)
    first, second = sorted(sweeps, key=lambda s: s.started_at)
    return faulty, clean, results[first.sweep_id], results[second.sweep_id], (first, second)


def _key(result):
    return (result.probe, json.dumps(result.case, sort_keys=True))


def test_injected_bitflip_exits_1_and_names_the_chip(runs):
    faulty, *_ = runs
    assert faulty.exit_code == 1, faulty.output
    fault_lines = [line for line in faulty.output.splitlines() if "FAULT" in line]
    assert len(fault_lines) == 1 and "cpu:1" in fault_lines[0]
    assert "cpu:1: gemm/square fp32: mismatch" in faulty.output


def test_without_inject_exits_0(runs):
    _, clean, *_ = runs
    assert clean.exit_code == 0, clean.output
    assert "FAULT" not in clean.output and "healthy" in clean.output


def test_both_sweeps_complete(runs):
    *_, sweeps = runs
    assert [s.status for s in sweeps] == ["complete", "complete"]


def test_every_family_runs_and_is_bit_identical_over_repeats(runs):
    _, _, _, clean, _ = runs
    assert FAMILIES <= set(all_probes())
    for chip in ("0", "1", "2"):
        assert {r.probe for r in clean[chip] if r.status == "ok"} == FAMILIES
        for r in clean[chip]:
            assert r.status in ("ok", "skipped"), (r.probe, r.case, r.message)
            if r.status == "ok":
                assert r.repeats == 3 and r.distinct_repeat_digests == 1, (r.probe, r.case)
                assert r.digest and r.throughput and r.throughput > 0


def test_digests_are_identical_across_virtual_chips_and_sweeps(runs):
    _, _, faulty, clean, _ = runs
    reference = {_key(r): r.digest for r in clean["0"] if r.status == "ok"}
    for chip in ("1", "2"):
        assert {_key(r): r.digest for r in clean[chip] if r.status == "ok"} == reference
    assert {_key(r): r.digest for r in faulty["2"] if r.status == "ok"} == reference


def test_every_family_reports_bit_flips_as_mismatch(runs):
    _, _, faulty, clean, _ = runs
    judged = [r for r in faulty["1"] if r.status != "skipped"]
    assert {r.probe for r in judged} == FAMILIES
    assert all(r.status == "mismatch" for r in judged), [(r.probe, r.status) for r in judged if r.status != "mismatch"]
    healthy = {_key(r): r.digest for r in clean["1"] if r.status == "ok"}
    assert all(healthy[_key(r)] != r.digest for r in judged), "a corrupted output has its own digest"
    (memory,) = [r for r in judged if r.probe == "memory" and "retest_of" not in r.telemetry]  # not its retest
    assert "failing words" in memory.message and "[0x" in memory.message


def test_unsupported_dtypes_are_skipped_not_mismatches(runs):
    _, _, faulty, _, _ = runs
    skipped = [r for r in faulty["1"] if r.status == "skipped"]
    assert {r.case["dtype"] for r in skipped} == {"tf32", "fp8e4m3"}
    assert all("not supported here" in r.message for r in skipped)


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


def test_a_chip_on_probation_is_swept_first(sdc_env, migrated_url):
    from sdc.node.devices import cpu_chip
    from sdc.records import QuarantineEvent, new_id, utcnow

    released = cpu_chip(2).chip
    store = Store(migrated_url)
    store.write([
        released,
        QuarantineEvent(event_id=new_id(), chip_id=released.chip_id, from_state="quarantined", to_state="released",
                        actor="alice", reason="reseated, vendor diagnostics clean", at=utcnow()),
    ])
    store.dispose()
    result = CliRunner().invoke(cli, ["--db", migrated_url, "--json", "sweep", "--devices", "cpu:0,cpu:1,cpu:2", "--probes", "gemm"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [c["name"] for c in report["chips"]] == ["cpu:2", "cpu:0", "cpu:1"]
    assert "cpu:2 (" in result.stderr and "on probation" in result.stderr
