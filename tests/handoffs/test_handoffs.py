"""Hand-offs: sdc check's exit codes and line, Slurm (never another tool's drain), Kubernetes,
and the Prometheus textfile (parsed back with prometheus_client's own parser)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from sdc.cli import cli
from sdc.exitcodes import ExitCode
from sdc.handoffs import k8s, slurm
from sdc.handoffs.check import CheckResult, decide, format_line
from sdc.handoffs.prometheus import read_metrics, write_textfile
from sdc.handoffs.state import ChipStatus, node_statuses

from tests import fleets as fleet

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize(
    "host, code, words",
    [
        ("node00", 1, "FAULT: GPU-node00-00 wrong/critical quarantined #0"),  # node00-03's is a dry run
        ("node02", 1, "FAULT: GPU-node02-03 retired #3 +1 more"),
        ("node01", 0, "WARN: GPU-node01-01 slow/medium suspect #1"),  # suspect never drains
        ("node03", 2, "UNKNOWN: no chips recorded for node03, run sdc sweep"),
    ],
)
def test_check_exit_codes_and_line(faulty_store, monkeypatch, host, code, words):
    monkeypatch.setenv("SDC_HOSTNAME", host)
    result = CliRunner().invoke(cli, ["--db", faulty_store.url, "check"])
    assert result.exit_code == code
    line = result.output.rstrip("\n")
    assert "\n" not in line and len(line) <= 80
    assert line == words


def test_check_healthy_host_and_formats(store, monkeypatch):
    store.write(fleet.fleet_records(hosts=1, sweeps=1))
    monkeypatch.setenv("SDC_HOSTNAME", "node00")
    for fmt, expected in (("text", "OK: 4 chips healthy on node00"), ("npd", "4 chips healthy on node00"), ("nhc", "OK: sdc: 4 chips healthy on node00")):
        result = CliRunner().invoke(cli, ["--db", store.url, "check", "--format", fmt])
        assert result.exit_code == 0 and result.output.strip() == expected


def test_check_on_a_missing_or_empty_database_is_unknown_not_fault(tmp_path):
    missing = CliRunner().invoke(cli, ["--db", f"sqlite:///{tmp_path / 'none.db'}", "check", "--host", "n1"])
    assert missing.exit_code == 2 and "no sdc database at" in missing.output and len(missing.output.strip()) <= 80
    (tmp_path / "empty.db").touch()
    empty = CliRunner().invoke(cli, ["--db", f"sqlite:///{tmp_path / 'empty.db'}", "check", "--host", "n1"])
    assert empty.exit_code == 2
    assert empty.output.strip() == "UNKNOWN: no sdc schema in the database, run sdc db upgrade"
    assert not (tmp_path / "none.db").exists()  # read-only: nothing created


def test_check_line_stays_within_80_characters_for_long_ids():
    chip = ChipStatus("GPU-" + "f" * 120, "n1", 7, "quarantined", verdict_kind="inconsistent", severity="critical")
    for fmt in ("text", "npd", "nhc"):
        line = format_line(decide("n1", [chip, chip]), fmt)
        assert len(line) <= 80 and "GPU-ffffffffff" in line and "quarantined" in line
    assert format_line(CheckResult(ExitCode.UNKNOWN, "x\ny " * 50)).count("\n") == 0


def test_check_does_not_import_torch(faulty_store):
    env = dict(os.environ, SDC_HOSTNAME="node00", SDC_DATABASE_URL=faulty_store.url)
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "sdc", "check"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}
    assert "torch" not in imported and "alembic" not in imported and "matplotlib" not in imported
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "sdc", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and "sdc" in done.stdout
    assert not {"torch", "sqlalchemy", "rich"} & {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line}


# ---- Slurm ------------------------------------------------------------------------


class FakeSlurm:
    def __init__(self, sinfo_output: str):
        self.sinfo_output = sinfo_output
        self.ran: list[tuple[str, ...]] = []

    def node_status(self, nodes):
        return {k: v for k, v in slurm.parse_sinfo(self.sinfo_output).items() if k in nodes}

    def run(self, argv):
        self.ran.append(tuple(argv))


def q(chip_id, host, state="quarantined", kind="wrong", severity="high"):
    return ChipStatus(chip_id, host, 0, state, verdict_kind=kind, severity=severity)


def test_slurm_drains_resumes_and_never_touches_other_reasons():
    statuses = {
        "a": [q("GPU-a", "a")],  # idle, no reason: drain
        "b": [q("GPU-b", "b")],  # drained by an admin: leave alone
        "c": [q("GPU-c", "c", "released")],  # drained by sdc, chip released: resume
        "d": [q("GPU-d", "d", "healthy")],  # drained by NHC, nothing of ours: leave alone
        "e": [q("GPU-e", "e")],  # already drained by sdc with the same reason
        "f": [q("GPU-f", "f", "released")],  # down by slurm (not responding): leave alone
    }
    reason_e = slurm.drain_reason(statuses["e"])
    canned = "\n".join(
        [
            "a|idle|none",
            "b|drained|RMA ticket 42 (bob)",
            "c|drained|SDC: GPU-c wrong/high quarantined #0",
            "d|draining|NHC: check_fs_mount: /scratch not mounted",
            f"e|drained|{reason_e}",
            "f|down|Not responding",
        ]
    )
    steps, skips = slurm.plan(statuses, slurm.parse_sinfo(canned))
    assert [s.shell for s in steps] == [
        "scontrol update NodeName=a State=DRAIN 'Reason=SDC: GPU-a wrong/high quarantined #0'",
        "scontrol update NodeName=c State=RESUME",
    ]
    assert {s.node for s in skips} == {"b", "e"}
    assert all(not s.argv[2].endswith(("=b", "=d", "=f")) for s in steps)


def test_slurm_cli_prints_by_default_and_applies_with_fake_tools(faulty_store, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    sinfo = "node00|idle|none\nnode01|drained|maintenance window (alice)\nnode02|mixed|none\n"
    (bin_dir / "sinfo").write_text(f"#!/bin/sh\necho \"sinfo $*\" >> {calls}\nprintf '%s' '{sinfo}'\n")
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"scontrol $*\" >> {calls}\n")
    for tool in ("sinfo", "scontrol"):
        (bin_dir / tool).chmod(0o755 | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    runner = CliRunner()
    printed = runner.invoke(cli, ["--db", faulty_store.url, "export", "slurm"])
    assert printed.exit_code == 0, printed.output
    assert "scontrol update NodeName=node00 State=DRAIN 'Reason=SDC: GPU-node00-00 wrong/critical quarantined #0'" in printed.output
    assert "node01" not in printed.output.replace("# node01:", "")  # only mentioned as left alone
    assert "scontrol" not in calls.read_text()  # printed, not run
    applied = runner.invoke(cli, ["--db", faulty_store.url, "export", "slurm", "--apply"])
    assert applied.exit_code == 0, applied.output
    ran = [line for line in calls.read_text().splitlines() if line.startswith("scontrol")]
    assert ran == [
        "scontrol update NodeName=node00 State=DRAIN Reason=SDC: GPU-node00-00 wrong/critical quarantined #0",
        "scontrol update NodeName=node02 State=DRAIN Reason=SDC: GPU-node02-03 retired #3 +1 more",
    ]


def test_export_without_subcommand_keeps_json_lines(faulty_store):
    result = CliRunner().invoke(cli, ["--db", faulty_store.url, "export", "--kind", "quarantine_event"])
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert len(lines) == 8 and {line["record"] for line in lines} == {"quarantine_event"}


# ---- Kubernetes -------------------------------------------------------------------


def kube_nodes(*nodes):
    items = []
    for name, unschedulable, taints, notes in nodes:
        items.append(
            {
                "metadata": {"name": name, "annotations": notes},
                "spec": {"unschedulable": unschedulable, "taints": [dict(key=k, value=v, effect=e) for k, v, e in taints]},
            }
        )
    return k8s.parse_nodes(json.dumps({"items": items}))


def test_k8s_cordons_taints_and_undoes_only_its_own():
    statuses = {
        "a": [q("host:a:cuda:0", "a")],
        "b": [q("GPU-b", "b", "released")],
        "c": [q("GPU-c", "c", "released")],
    }
    nodes = kube_nodes(
        ("a", False, [], {}),
        ("b", True, [(k8s.TAINT_KEY, "GPU-b", "NoSchedule")], {k8s.CORDON_ANNOTATION: "true"}),
        ("c", True, [(k8s.TAINT_KEY, "GPU-c", "NoSchedule")], {}),  # an operator cordoned it too
    )
    steps, skips = k8s.plan(statuses, nodes)
    assert [s.shell for s in steps] == [
        "kubectl cordon a",
        "kubectl annotate node a sdc.io/cordoned=true --overwrite",
        "kubectl taint nodes a sdc.io/quarantined=host-a-cuda-0:NoSchedule --overwrite",
        "kubectl taint nodes b sdc.io/quarantined:NoSchedule-",
        "kubectl uncordon b",
        "kubectl annotate node b sdc.io/cordoned-",
        "kubectl taint nodes c sdc.io/quarantined:NoSchedule-",
    ]
    assert [s.node for s in skips] == ["c"]
    assert k8s.taint_value("<script>" * 20).replace("-", "").isalnum() and len(k8s.taint_value("x" * 99)) == 63


def test_k8s_finds_a_node_named_differently_from_the_host_and_never_guesses():
    node = lambda name, labels=None, addresses=(): {  # noqa: E731
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {},
        "status": {"addresses": [{"type": t, "address": a} for t, a in addresses]},
    }
    nodes = k8s.parse_nodes(json.dumps({"items": [
        node("ip-10-0-0-7.ec2.internal", {"kubernetes.io/hostname": "ip-10-0-0-7"}),
        node("worker-3", addresses=[("InternalIP", "10.0.0.3"), ("Hostname", "gpu3.dc1.example")]),
        node("gpu9.rack1.example"),
        node("dup.a.example"),
        node("dup.b.example"),
    ]}))
    statuses = {host: [q(f"GPU-{host}", host)] for host in ("ip-10-0-0-7", "gpu3.dc1.example", "gpu9", "dup", "elsewhere")}
    steps, skips = k8s.plan(statuses, nodes)
    cordoned = [s.shell for s in steps if s.shell.startswith("kubectl cordon")]
    # label, Hostname address, unique short name: the commands name the node as Kubernetes knows it
    assert cordoned == ["kubectl cordon worker-3", "kubectl cordon gpu9.rack1.example", "kubectl cordon ip-10-0-0-7.ec2.internal"]
    why = {s.node: s.why for s in skips}
    assert set(why) == {"dup", "elsewhere"}
    assert "ambiguous" in why["dup"] and "dup.a.example" in why["dup"]
    assert "not a Kubernetes node" in why["elsewhere"]


# ---- Prometheus -------------------------------------------------------------------


def test_prometheus_textfile_parses_and_carries_the_states(faulty_store, tmp_path):
    statuses = node_statuses(faulty_store.engine())
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    path = write_textfile(textfiles, read_metrics(faulty_store.engine(), statuses))
    assert path == textfiles / "sdc.prom" and [p.name for p in textfiles.iterdir()] == ["sdc.prom"]  # no temp left
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    assert set(families) >= {"sdc_chip_state", "sdc_probe_results", "sdc_last_sweep_timestamp_seconds", "sdc_verdict_score"}
    state = {(s.labels["chip"], s.labels["state"]): s.value for s in families["sdc_chip_state"].samples}
    assert state[("GPU-node00-00", "quarantined")] == 1.0 and state[("GPU-node00-00", "healthy")] == 0.0
    assert state[(fleet.XSS, "quarantined")] == 1.0  # label values survive escaping
    results = {(s.labels["chip"], s.labels["status"]): s.value for s in families["sdc_probe_results"].samples if s.name.endswith("_total")}
    assert results[("GPU-node00-00", "mismatch")] == 3 and results[("GPU-node00-00", "ok")] == 3
    scores = {(s.labels["chip"], s.labels["kind"]): s.value for s in families["sdc_verdict_score"].samples}
    assert scores[("GPU-node00-00", "wrong")] == pytest.approx(0.99)
    assert all(s.labels.keys() >= {"host", "chip", "UUID", "gpu", "modelName", "Hostname"} for f in families.values() for s in f.samples)
    # Why a chip is flagged, also for wrong and inconsistent verdicts, which carry no score.
    verdicts = {(s.labels["chip"], s.labels["kind"], s.labels["severity"]) for s in families["sdc_chip_verdict"].samples}
    assert ("GPU-node00-00", "wrong", "critical") in verdicts and ("GPU-node02-02", "inconsistent", "high") in verdicts
    drains = {s.labels["UUID"]: s.value for s in families["sdc_chip_drains"].samples}
    assert drains["GPU-node00-00"] == 1 and drains["GPU-node01-01"] == 0  # quarantined drains, suspect does not
    sample = next(s for s in families["sdc_chip_drains"].samples if s.labels["UUID"] == "GPU-node00-00")
    assert (sample.labels["gpu"], sample.labels["modelName"], sample.labels["Hostname"]) == ("0", "H100 80GB HBM3", "node00")


def test_prometheus_cli_prints_unless_applied(faulty_store, tmp_path, monkeypatch):
    monkeypatch.setenv("SDC_HOSTNAME", "node00")
    tmp_path = tmp_path / "textfiles"
    tmp_path.mkdir()
    runner = CliRunner()
    printed = runner.invoke(cli, ["--db", faulty_store.url, "export", "prometheus", "--textfile", str(tmp_path)])
    assert printed.exit_code == 0 and 'chip="GPU-node00-00"' in printed.output and "sdc_chip_state{" in printed.output
    assert "node01" not in printed.output and not list(tmp_path.iterdir())
    applied = runner.invoke(cli, ["--db", faulty_store.url, "export", "prometheus", "--textfile", str(tmp_path), "--apply"])
    assert applied.exit_code == 0 and (tmp_path / "sdc.prom").exists()
    missing = runner.invoke(cli, ["--db", faulty_store.url, "export", "prometheus", "--textfile", str(tmp_path / "nope"), "--apply"])
    assert missing.exit_code == 2 and "does not exist" in missing.output
