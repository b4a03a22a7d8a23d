"""Issue 11 items 4, 11 and 12 at the door: what ``sdc ingest`` must refuse, as a user feeds it.

These are what the quarantine hand-offs rely on: a hostile id, a transition for a chip the
store has never seen, or one stamped in the future never gets in.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from sdc.cli import cli

from tests import fleets as fleet

def _ingest(store, tmp_path, records):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(r.to_json() + "\n" for r in records))
    return CliRunner().invoke(cli, ["--db", store.url, "ingest", str(path)])


@pytest.mark.parametrize("chip_id", ["GPU-a'$(touch /tmp/x)'b", "GPU-\x1b[31mred", "GPU-a\nb", "GPU-[/bold]", "-rf"])
def test_ingest_refuses_a_chip_id_outside_the_safe_set_with_its_line(store, tmp_path, chip_id):
    good = fleet.chip("node00", 0)
    result = _ingest(store, tmp_path, [good, fleet.chip("node00", 1, chip_id=chip_id)])
    assert result.exit_code == 2 and "in.jsonl:2:" in result.output, result.output
    listed = CliRunner().invoke(cli, ["--db", store.url, "--json", "export", "--kind", "chip"]).output
    assert listed.strip() == "", "nothing was written"


@pytest.mark.parametrize("host", ["-oProxyCommand=touch /tmp/x", "-oProxyCommand=x"])
def test_ingest_refuses_a_host_that_reads_as_an_option(store, tmp_path, host):
    result = _ingest(store, tmp_path, [fleet.chip(host, 0, chip_id="GPU-ok")])
    assert result.exit_code == 2 and "in.jsonl:1:" in result.output, result.output


def test_ingest_refuses_a_quarantine_event_for_a_chip_never_seen(store, tmp_path):
    result = _ingest(store, tmp_path, [fleet.event("GPU-ghost", "quarantined")])
    assert result.exit_code == 2 and "GPU-ghost" in result.output, result.output
    status = CliRunner().invoke(cli, ["--db", store.url, "status"])
    assert status.exit_code != 1, status.output


def test_ingest_refuses_an_event_from_the_future(store, tmp_path):
    store.write([fleet.chip("node00", 0)])
    future = fleet.event("GPU-node00-00", "released", from_state="quarantined", at=datetime(2099, 1, 1, tzinfo=timezone.utc))
    result = _ingest(store, tmp_path, [future])
    assert result.exit_code == 2 and "in.jsonl:1:" in result.output, result.output
