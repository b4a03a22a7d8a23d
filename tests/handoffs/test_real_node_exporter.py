"""The Prometheus hand-off against a real node_exporter: the textfile written under a root
umask of 077 is readable, scrapes without error, and carries sdc's families and labels."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from sdc.cli import cli
from tests.handoffs.real_programs import free_port, require, stop, wait_for


def scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return None


def test_node_exporter_reads_the_textfile_written_under_umask_077(faulty_store, tmp_path, request):
    tools = require("prometheus-node-exporter")
    # pytest's tmp_path is private to root; node_exporter runs as nobody, as in production.
    textfiles = Path(tempfile.mkdtemp(prefix="sdc-textfiles-"))
    request.addfinalizer(lambda: shutil.rmtree(textfiles, ignore_errors=True))
    textfiles.chmod(0o755)
    old = os.umask(0o077)
    try:
        result = CliRunner().invoke(cli, ["--db", faulty_store.url, "export", "prometheus", "--all-hosts", "--textfile", str(textfiles), "--apply"])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert (textfiles / "sdc.prom").stat().st_mode & 0o777 == 0o644
    port = free_port()
    # As in production, node_exporter is not the user that wrote the file.
    argv = [tools["prometheus-node-exporter"], f"--web.listen-address=127.0.0.1:{port}", f"--collector.textfile.directory={textfiles}",
            "--collector.disable-defaults", "--collector.textfile"]
    log = open(tmp_path / "node_exporter.log", "wb")
    exporter = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, user="nobody", start_new_session=True)
    try:
        text = wait_for(lambda: scrape(port), "node_exporter answering", logs=(tmp_path / "node_exporter.log",))
    finally:
        stop(exporter)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (error,) = families["node_textfile_scrape_error"].samples
    assert error.value == 0
    assert {"sdc_chip_state", "sdc_chip_drains", "sdc_chip_verdict", "sdc_probe_results", "sdc_verdict_score"} <= set(families)
    verdicts = {(s.labels["UUID"], s.labels["kind"], s.labels["severity"]) for s in families["sdc_chip_verdict"].samples}
    assert ("GPU-node00-00", "wrong", "critical") in verdicts
    state = next(s for s in families["sdc_chip_state"].samples if s.labels["UUID"] == "GPU-node00-00" and s.labels["state"] == "quarantined")
    assert state.value == 1 and state.labels["Hostname"] == "node00" and state.labels["gpu"] == "0"
