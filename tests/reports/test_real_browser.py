"""The HTML report in a real headless Chromium: with hostile chip ids and host names nothing
executes (no script runs, nothing is fetched) and the page renders readable."""

from __future__ import annotations

import re
import subprocess

from click.testing import CliRunner

from sdc.cli import cli
from tests.handoffs.real_programs import require

from tests import fleets as fleet

HOSTILE = ["<img src=x onerror=\"document.title='PWNED'\">", "<script>document.title='PWNED'</script>",
           "GPU-a'$(touch /tmp/x)'b", "\"><svg onload=document.title='PWNED'>"]


def test_the_html_report_renders_in_chromium_and_runs_nothing(store, tmp_path):
    tools = require("chromium")
    records = fleet.faulty_fleet()
    for i, name in enumerate(HOSTILE):
        chip = fleet.chip(name, i, chip_id=name)
        records += [chip, fleet.event(name, "quarantined", "suspect")]
    store.write(records)
    page = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["--db", store.url, "report", "--format", "html", "-o", str(page)])
    assert result.exit_code == 1, result.output  # flagged chips
    base = [tools["chromium"], "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000"]
    dom = subprocess.run(base + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    title = re.search(r"<title>(.*?)</title>", dom.stdout, re.S).group(1)
    assert "PWNED" not in title and title.startswith("sdc quarantine report")
    # The hostile names are text in the page, never elements: no script, no img, no handler.
    assert not re.search(r"<(script|img)\b", dom.stdout, re.I), re.search(r".{80}<(script|img)\b.{80}", dom.stdout, re.I | re.S)
    assert not re.search(r"<svg[^>]*onload", dom.stdout, re.I)
    assert "&lt;img src=x onerror=" in dom.stdout and "GPU-a'$(touch /tmp/x)'b" in dom.stdout
    shot = tmp_path / "report.png"
    done = subprocess.run(base + [f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    # A readable page is a real picture, not a blank one: PNG with more than a few colours' worth of bytes.
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
