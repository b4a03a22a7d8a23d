"""What a health checker and an operator act on: only draining chips drain, a swapped chip lets
its node go, hostile ids already in the store are harmless in every line, reasons are stable."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta

import pytest
from click.testing import CliRunner

from sdc.cli import cli
from sdc.handoffs import k8s, slurm
from sdc.handoffs.state import node_statuses
from sdc.records import QuarantineEvent, Sweep, new_id

from tests import fleets as fleet
from tests.handoffs.test_handoffs import kube_nodes

T3 = fleet.T0 + timedelta(days=3)


def ev(chip_id, to_state, from_state="healthy", at=T3, **details):
    return QuarantineEvent(event_id=new_id(), chip_id=chip_id, from_state=from_state, to_state=to_state, actor="sdc-analysis",
                           reason=f"moved to {to_state}", at=at, details=details)


def check(store, host, *args):
    result = CliRunner().invoke(cli, ["--db", store.url, "check", "--host", host, *args])
    return result.exit_code, result.output.rstrip("\n")


def test_a_breaker_trip_drains_nothing_and_says_so(store):
    store.write(fleet.fleet_records(hosts=1))
    held = [ev(f"GPU-node00-0{i}", "suspect", breaker=True, kind="wrong", severity="critical") for i in range(4)]
    store.write(held)
    for fmt, word in (("text", "WARN: "), ("nhc", "WARN: sdc: "), ("npd", "SDCChipWarning: ")):
        code, line = check(store, "node00", "--format", fmt)
        assert code == 0 and line.startswith(word) and "held-by-breaker" in line and "+3 more" in line
    statuses = node_statuses(store.engine())
    assert slurm.plan(statuses, slurm.parse_sinfo("node00|idle|none"))[0] == []
    assert k8s.plan(statuses, kube_nodes(("node00", False, [], {})))[0] == []
    listed = CliRunner().invoke(cli, ["--db", store.url, "quarantine", "list"]).output
    assert listed.count("held by the circuit breaker: drains nothing") == 4
    for fmt in ("table", "markdown", "html"):
        report = CliRunner().invoke(cli, ["--db", store.url, "report", "--format", fmt]).output
        assert "held by the circuit breaker" in " ".join(report.split()), fmt
    import json

    data = json.loads(CliRunner().invoke(cli, ["--db", store.url, "report", "--format", "json"]).output)
    assert all(c["provenance"]["held_by_breaker"] for c in data["chips"] if c["state"] == "suspect")
    # An sdc drain left from before is undone: a held chip holds nothing.
    steps, _ = slurm.plan(statuses, slurm.parse_sinfo("node00|drained|SDC: GPU-node00-00 wrong/critical quarantined #0"))
    assert [s.shell for s in steps] == ["scontrol update NodeName=node00 State=RESUME"]


def _sweep_with(store, host, chips, at):
    sweep = Sweep(new_id(), host, "quick", at, "complete", "0.1", finished_at=at + timedelta(minutes=5))
    store.write([sweep] + [fleet.result(sweep.sweep_id, c, at, "ok", "d-good") for c in chips])


def test_a_swapped_or_replaced_chip_stops_holding_its_node(store):
    store.write(fleet.fleet_records(hosts=2))
    store.write([ev("GPU-node00-00", "quarantined", kind="wrong", severity="high"),
                 ev("GPU-node01-01", "retired", "quarantined")])
    assert check(store, "node00")[0] == 1 and check(store, "node01")[0] == 1
    # RMA swap on node00: a new card answers at index 0. node01's retired card was pulled.
    new = fleet.chip("node00", 0, chip_id="GPU-new-card")
    store.write([new])
    later = fleet.T0 + timedelta(days=5)
    _sweep_with(store, "node00", ["GPU-new-card", "GPU-node00-01", "GPU-node00-02", "GPU-node00-03"], later)
    _sweep_with(store, "node01", ["GPU-node01-00", "GPU-node01-02", "GPU-node01-03"], later)
    code, line = check(store, "node00")
    assert code == 0 and line == "WARN: GPU-node00-00 wrong/high quarantined gone #0"
    assert check(store, "node01")[0] == 0
    # A quarantined chip a partial sweep (--devices) left out still holds its node.
    store.write([ev("GPU-node01-02", "quarantined", kind="slow", severity="high")])
    _sweep_with(store, "node01", ["GPU-node01-00"], later + timedelta(days=1))
    assert check(store, "node01")[:2] == (1, "FAULT: GPU-node01-02 slow/high quarantined #2")
    # ... until the operator records it as replaced (a unique prefix of the id is enough).
    runner = CliRunner()
    done = runner.invoke(cli, ["--db", store.url, "quarantine", "replace", "GPU-node01-0", "--by", "ana", "--reason", "RMA 7"])
    assert done.exit_code == 2 and "several chip ids" in done.output
    done = runner.invoke(cli, ["--db", store.url, "quarantine", "replace", "GPU-node01-02", "--by", "ana", "--reason", "RMA 7"])
    assert done.exit_code == 0 and "quarantined -> retired" in done.output
    assert check(store, "node01")[0] == 0
    shown = runner.invoke(cli, ["--db", store.url, "quarantine", "show", "GPU-node01-02"]).output
    assert "retired by ana: RMA 7" in shown
    unknown = runner.invoke(cli, ["--db", store.url, "quarantine", "release", "GPU-nope", "--by", "a", "--reason", "b"])
    assert unknown.exit_code == 2 and "no chip named GPU-nope" in unknown.output


HOSTILE_CHIPS = ["GPU-a'$(touch {marker})'b", "GPU-x\";touch {marker};\"", "GPU-\x1b]0;pwned\x07\x1b[2J", "GPU-[/bold]x", "GPU-n\ntouch {marker}"]


@pytest.fixture
def hostile_store(store, tmp_path, monkeypatch):
    # Ingest now refuses such ids; a database written before that (or edited by hand) may still
    # hold them, and every output must stay harmless. So these rows skip the writer's checks.
    import sdc.store.writer

    monkeypatch.setattr(sdc.store.writer, "check_record", lambda record: None)
    marker = tmp_path / "pwned"
    ids = [c.format(marker=marker) for c in HOSTILE_CHIPS]
    host = "-oProxyCommand=touch " + str(marker)
    chips = [fleet.chip("node00", i, chip_id=c) for i, c in enumerate(ids)] + [fleet.chip(host, 0, chip_id="GPU-ok-on-bad-host")]
    store.write(chips)
    store.write([ev(c, "quarantined", kind="wrong", severity="critical") for c in ids + ["GPU-ok-on-bad-host"]])
    return store, ids, marker, host


def test_hostile_ids_in_the_store_never_reach_a_shell(hostile_store, tmp_path):
    store, ids, marker, host = hostile_store
    # NHC evals the message of die: feed sdc's line to an eval the way NHC does.
    code, line = check(store, "node00", "--format", "nhc")
    assert code == 1 and line.startswith("SDC: GPU-") and all(ch.isalnum() or ch in " ._:@+=-/#," for ch in line)
    script = f'OUTPUT=$("$SDC" --db "$DB" check --format nhc --host node00); eval "echo NHC: $OUTPUT"; eval "MSG=\\"$OUTPUT\\""'
    env = dict(os.environ, SDC=str(_sdc_bin()), DB=store.url)
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.startswith("NHC: SDC: GPU-") and not marker.exists(), done.stderr
    # The printed Slurm plan piped to sh runs only scontrol, once per node.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "sinfo").write_text(f"#!/bin/sh\nprintf 'node00|idle|none\\n'\n")
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"scontrol $*\" >> {log}\n")
    for tool in ("sinfo", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    path_env = dict(env, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    plan = subprocess.run([str(_sdc_bin()), "--db", store.url, "export", "slurm"], capture_output=True, text=True, env=path_env, timeout=120)
    assert plan.returncode == 0, plan.stderr
    assert "\x1b" not in plan.stdout and "\x07" not in plan.stdout
    subprocess.run(["sh"], input=plan.stdout, text=True, env=path_env, timeout=60, capture_output=True)
    assert not marker.exists()
    ran = log.read_text().splitlines()
    assert len(ran) == 1 and ran[0].startswith("scontrol update NodeName=node00 State=DRAIN Reason=SDC: GPU-")
    assert all(ch.isalnum() or ch in " ._:@+=-/#" for ch in ran[0])
    # The report recommends no command for them, and never ssh to a host that reads as an option.
    report = CliRunner().invoke(cli, ["--db", store.url, "report", "--format", "markdown"]).output
    assert "ssh" not in report and report.count("withheld") >= len(ids) + 1


def test_hostile_ids_reach_no_terminal_raw_and_break_no_command(hostile_store):
    store, ids, marker, host = hostile_store
    runner = CliRunner()
    for args in (["check", "--host", "node00"], ["quarantine", "list"], ["quarantine", "show", ids[3]],
                 ["quarantine", "show", ids[2]], ["report"], ["export", "k8s"]):
        result = runner.invoke(cli, ["--db", store.url, *args])
        assert result.exit_code in (0, 1, 2) and result.exception is None or isinstance(result.exception, SystemExit), (args, result.output)
        assert "\x1b" not in result.output and "\x07" not in result.output, args
        assert "MarkupError" not in result.output and "Traceback" not in result.output, args
    shown = runner.invoke(cli, ["--db", store.url, "quarantine", "show", ids[3]])
    assert shown.exit_code == 0 and "GPU-[/bold]x" in shown.output


def test_the_reason_names_the_same_verdict_whatever_the_row_order(store):
    store.write(fleet.fleet_records(hosts=1))
    verdicts = [fleet.verdict("GPU-node00-00", kind, severity, analysis_id="a9")
                for kind, severity in (("slow", "high"), ("inconsistent", "high"), ("wrong", "critical"), ("wrong", "low"))]
    store.write(verdicts)
    store.write([ev("GPU-node00-00", "quarantined")])  # an event without the verdict's kind
    lines = set()
    for _ in range(3):
        lines.add(check(store, "node00")[1])
        statuses = node_statuses(store.engine())
        lines.add(slurm.drain_reason(statuses["node00"]))
    assert lines == {"FAULT: GPU-node00-00 wrong/critical quarantined #0", "SDC: GPU-node00-00 wrong/critical quarantined #0"}
    assert slurm.drain_reason(statuses["node00"])[:20] == "SDC: GPU-node00-00 w"  # sinfo -R's default width


def _sdc_bin():
    from pathlib import Path

    return Path(__file__).parents[2] / ".venv" / "bin" / "sdc"


def test_the_store_order_decides_the_state_not_a_wrong_clock(store):
    from datetime import datetime, timezone

    store.write(fleet.fleet_records(hosts=1))
    chip = "GPU-node00-00"
    store.write([ev(chip, "quarantined", kind="wrong", severity="critical")])
    future = ev(chip, "released", "quarantined", at=datetime(2099, 1, 1, tzinfo=timezone.utc))  # a clock gone wrong
    store.write([future])
    assert check(store, "node00")[0] == 0
    store.write([ev(chip, "quarantined", "released", at=T3 + timedelta(hours=1), kind="wrong", severity="critical")])
    assert check(store, "node00") == (1, "FAULT: GPU-node00-00 wrong/critical quarantined #0")
    states = {s.chip_id: s.state for s in node_statuses(store.engine())["node00"]}
    assert states[chip] == "quarantined"
    from sdc.quarantine.states import state_names
    from sdc.store.reader import quarantine_events

    assert state_names(quarantine_events(store.engine()))[chip] == "quarantined"
    # Re-ingesting the 2099 event is a no-op: it does not move to the end of the order.
    store.write([future])
    assert check(store, "node00")[0] == 1


def test_hostile_host_names_never_reach_sinfo_nor_the_terminal(store, tmp_path, monkeypatch):
    """A host with ESC, a newline or a leading ``-`` is left alone: it is not even asked about
    (``sinfo --nodes=...``), and an error from sinfo reaches the terminal as one clean line."""
    import sdc.store.writer

    # Rows from a database written before ingest refused such hosts: they skip the writer's checks.
    monkeypatch.setattr(sdc.store.writer, "check_record", lambda record: None)
    hosts = ["h\x1b[31most", "h\nost", "-oProxyCommand=x", "n1"]
    store.write([fleet.chip(h, 0, chip_id=f"GPU-host{i}") for i, h in enumerate(hosts)])
    store.write([ev(f"GPU-host{i}", "quarantined", kind="wrong", severity="critical") for i in range(len(hosts))])
    bin_dir, log = tmp_path / "bin", tmp_path / "sinfo.args"
    bin_dir.mkdir()
    sinfo = bin_dir / "sinfo"
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    export = [str(_sdc_bin()), "--db", store.url, "export", "slurm"]

    sinfo.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {log}\nprintf 'n1|idle|none\\n'\n")
    sinfo.chmod(0o755)
    plan = subprocess.run(export, capture_output=True, text=True, env=env, timeout=120)
    assert plan.returncode == 0, plan.stderr
    asked = log.read_text()
    assert "--nodes=n1\n" in asked and "ost" not in asked and "ProxyCommand" not in asked
    assert "scontrol update NodeName=n1 State=DRAIN" in plan.stdout
    assert plan.stdout.count("left alone: the host name has characters outside the safe set") == 3
    assert "\x1b" not in plan.stdout and "-oProxy" not in plan.stdout

    # sinfo fails and echoes back what it was given, control characters and all.
    sinfo.write_text("#!/bin/sh\nprintf 'sinfo: error: bad \\033[31mnode\\007 %s\\n' \"$*\" >&2\nexit 1\n")
    failed = subprocess.run(export, capture_output=True, text=True, env=env, timeout=120)
    assert failed.returncode == 2
    assert failed.stderr.startswith("sdc: ") and failed.stderr.count("\n") == 1, failed.stderr
    assert "\x1b" not in failed.stderr and "\x07" not in failed.stderr


def test_a_replaced_chip_neither_warns_nor_flags_the_report(store):
    """After ``sdc quarantine replace`` (the card is physically gone) the node's check is OK
    and the report has nothing left to act on: exit 0 for both, for good."""
    store.write(fleet.fleet_records(hosts=1))
    chip = "GPU-node00-02"
    store.write([ev(chip, "quarantined", kind="wrong", severity="critical")])
    run = CliRunner()
    assert check(store, "node00")[0] == 1
    replaced = run.invoke(cli, ["--db", store.url, "quarantine", "replace", chip, "--by", "alice", "--reason", "RMA 4711"])
    assert replaced.exit_code == 0, replaced.output
    for fmt, word in (("text", "OK: "), ("nhc", "OK: sdc: ")):
        code, line = check(store, "node00", "--format", fmt)
        assert (code, line) == (0, f"{word}3 chips healthy on node00"), line
    assert check(store, "node00", "--format", "npd") == (0, "3 chips healthy on node00")
    report = run.invoke(cli, ["--db", store.url, "report", "--format", "json"])
    assert report.exit_code == 0, report.output
    card = next(c for c in json.loads(report.output)["chips"] if c["chip_id"] == chip)
    assert card["state"] == "retired" and card["provenance"]["replaced"] and card["action"]["kind"] == "none"
    assert run.invoke(cli, ["--db", store.url, "report"]).exit_code == 0


def test_hostile_ids_reach_no_terminal_raw_in_markdown_html_or_json(hostile_store):
    """``sdc report --format markdown|html|json`` print to stdout like the table does: ESC and
    BEL from a chip id never reach the terminal raw (nor the ticket or page they are pasted in)."""
    store, ids, marker, host = hostile_store
    runner = CliRunner()
    for args in (["report", "--format", "markdown"], ["report", "--format", "html"], ["report", "--format", "json"],
                 ["--json", "quarantine", "list"], ["status"]):
        result = runner.invoke(cli, ["--db", store.url, *args])
        assert result.exit_code in (0, 1), (args, result.output)
        assert "\x1b" not in result.output and "\x07" not in result.output, args
    page = runner.invoke(cli, ["--db", store.url, "report", "--format", "markdown"]).output
    assert "GPU-?\\]0;pwned?" in page  # still recognisable: controls shown as ?, markdown escaped
