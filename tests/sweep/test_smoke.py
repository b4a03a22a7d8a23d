"""The walking skeleton end to end: sweep this machine's chips into the embedded database."""

from click.testing import CliRunner

from sdc.cli import cli
from sdc.store import Store
from sdc.store.writer import count_rows


def test_sweep_refuses_unmigrated_database(sdc_env):
    result = CliRunner().invoke(cli, ["sweep", "--devices", "cpu:0"])
    assert result.exit_code == 2
    assert "sdc db upgrade" in result.output


def test_sweep_stores_results_for_each_chip(sdc_env, migrated_url):
    runner = CliRunner()
    result = runner.invoke(cli, ["--db", migrated_url, "sweep", "--devices", "cpu:0,cpu:1", "--probes", "gemm"])
    assert result.exit_code == 0, result.output
    assert "host:" in result.output
    store = Store(migrated_url)
    counts = count_rows(store.engine())
    store.dispose()
    assert counts["chip"] == 2
    assert counts["sweep"] == 1
    assert counts["probe_result"] == 2 * 7  # seven gemm cases per chip in the quick suite
