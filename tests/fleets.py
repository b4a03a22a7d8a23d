"""Fixture fleets for the ops tests, written as records through Store.write (no probes run)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from sdc.records import Chip, ProbeResult, QuarantineEvent, Sweep, Verdict, new_id

T0 = datetime(2026, 11, 1, 3, 0, tzinfo=timezone.utc)
XSS = "<script>alert(1)</script>"
STACK = {"torch": "2.13.0", "runtime": "cuda 13.0", "driver": "580.1"}


def chip(host: str, index: int, chip_id: str | None = None, vendor: str = "nvidia") -> Chip:
    return Chip(
        chip_id=chip_id or f"GPU-{host}-{index:02d}",
        host=host,
        index=index,
        vendor=vendor,
        model="H100 80GB HBM3",
        memory_bytes=80 << 30,
        stack=STACK,
        stack_hash="s1",
        observed_at=T0,
    )


def fleet_records(hosts: int = 3, per_host: int = 4, sweeps: int = 3, seed: int = 0) -> list:
    """A healthy fleet: chips, complete sweeps and ok probe results with throughputs."""
    rng = random.Random(seed)
    chips = [chip(f"node{h:02d}", i) for h in range(hosts) for i in range(per_host)]
    records: list = list(chips)
    for s in range(sweeps):
        at = T0 + timedelta(days=s)
        for h in range(hosts):
            sweep = Sweep(new_id(), f"node{h:02d}", "quick", at, "complete", "0.1", finished_at=at + timedelta(minutes=5))
            records.append(sweep)
            for c in chips[h * per_host : (h + 1) * per_host]:
                records.append(result(sweep.sweep_id, c.chip_id, at, "ok", "d-good", 50 + rng.gauss(0, 1)))
    return records


def result(sweep_id, chip_id, at, status, digest, throughput=50.0, dtype="bf16"):
    return ProbeResult(
        result_id=new_id(), sweep_id=sweep_id, chip_id=chip_id, probe="gemm", probe_version=1,
        case={"name": "square", "shape": [1024, 1024, 1024], "dtype": dtype}, seed=0, status=status,
        stack_hash="s1", repeats=3, distinct_repeat_digests=1, timings=[0.01], observed_at=at, digest=digest,
        throughput=throughput, throughput_unit="TFLOP/s",
    )


def verdict(chip_id, kind, severity, analysis_id="a1", evidence=(), summary=None) -> Verdict:
    return Verdict(
        verdict_id=new_id(), analysis_id=analysis_id, chip_id=chip_id, kind=kind, severity=severity, k=3, n=3,
        summary=summary or f"{kind} on gemm", created_at=T0 + timedelta(days=3), statistic=12.5, p_value=1e-6,
        score=0.99, first_seen=T0, last_seen=T0 + timedelta(days=2), evidence_ids=list(evidence),
    )


def event(chip_id, to_state, from_state="healthy", verdict_id=None, dry_run=False, at=None, actor="sdc-analyze") -> QuarantineEvent:
    return QuarantineEvent(
        event_id=new_id(), chip_id=chip_id, from_state=from_state, to_state=to_state, actor=actor,
        reason=f"moved to {to_state}", at=at or T0 + timedelta(days=3), verdict_id=verdict_id,
        details={"dry_run": True} if dry_run else {},
    )


def faulty_fleet() -> list:
    """Every fault kind and state: wrong/quarantined, slow/suspect, inconsistent/quarantined,
    retired, released, a dry-run proposal, and a chip whose id and host are an XSS attempt."""
    records = fleet_records()
    sweeps = [r for r in records if isinstance(r, Sweep) and r.host == "node00"]
    bad = chip(XSS, 0, chip_id=XSS)
    records.append(bad)
    evidence = []
    for s in sweeps:
        r = result(s.sweep_id, "GPU-node00-00", s.started_at, "mismatch", "d-bad")
        records.append(r)
        evidence.append(r.result_id)
        records.append(result(s.sweep_id, XSS, s.started_at, "mismatch", "d-" + XSS))
    wrong = verdict("GPU-node00-00", "wrong", "critical", evidence=evidence)
    slow = verdict("GPU-node01-01", "slow", "medium")
    flaky = verdict("GPU-node02-02", "inconsistent", "high")
    xss = verdict(XSS, "wrong", "high", summary=XSS)
    records += [wrong, slow, flaky, xss]
    records += [
        event("GPU-node00-00", "quarantined", "suspect", wrong.verdict_id),
        event("GPU-node01-01", "suspect", verdict_id=slow.verdict_id),
        event("GPU-node02-02", "quarantined", "suspect", flaky.verdict_id),
        event("GPU-node02-03", "retired", "quarantined"),
        event("GPU-node01-02", "quarantined", "suspect", at=T0 + timedelta(days=1)),
        event("GPU-node01-02", "released", "quarantined", at=T0 + timedelta(days=2), actor="alice"),
        event("GPU-node00-03", "quarantined", dry_run=True),
        event(XSS, "quarantined", "suspect", xss.verdict_id, actor=XSS),
    ]
    return records


def example_fleet(seed: int = 7) -> list:
    """A realistic small fleet for the example report in docs/: 4 hosts x 8 chips, 6 nightly
    sweeps, one chip wrong in bf16 (quarantined), one slow (suspect), one nondeterministic
    (quarantined), one released after a reset."""
    rng = random.Random(seed)
    hosts = [f"gpu-a{n:02d}" for n in range(1, 5)]
    chips = []
    for host in hosts:
        for i in range(8):
            uid = "GPU-%08x-%04x-%04x-%04x-%012x" % tuple(rng.getrandbits(b) for b in (32, 16, 16, 16, 48))
            chips.append(chip(host, i, chip_id=uid))
    wrong, slow, flaky, released = chips[3], chips[12], chips[21], chips[30]
    records: list = list(chips)
    evidence: dict[str, list[str]] = {wrong.chip_id: [], flaky.chip_id: []}
    for day in range(6):
        at = T0 + timedelta(days=day)
        for host in hosts:
            sweep = Sweep(new_id(), host, "standard", at, "complete", "0.1", finished_at=at + timedelta(minutes=7))
            records.append(sweep)
            for c in (c for c in chips if c.host == host):
                for dtype, base in (("bf16", 610.0), ("fp32", 48.0)):
                    tp = base * rng.gauss(1.0, 0.012) * (0.84 if c is slow else 1.0)
                    bad = (c is wrong and dtype == "bf16" and day >= 2) or (c is flaky and dtype == "fp32" and day in (3, 5))
                    r = result(sweep.sweep_id, c.chip_id, at + timedelta(minutes=2), "mismatch" if bad else "ok",
                               f"{c.chip_id[-4:]}{day}" if bad else f"good-{dtype}", tp, dtype)
                    records.append(r)
                    if bad:
                        evidence[c.chip_id].append(r.result_id)
    decided = T0 + timedelta(days=5, hours=6)
    v_wrong = replace_verdict(verdict(wrong.chip_id, "wrong", "high", "an-0612", evidence[wrong.chip_id],
                                      "bf16 GEMM digest differs from the 31-chip cohort majority in 4 of 4 sweeps"), decided)
    v_slow = replace_verdict(verdict(slow.chip_id, "slow", "medium", "an-0612",
                                     summary="bf16 GEMM throughput 16% below the cohort median (robust z = -13.2)"), decided)
    v_flaky = replace_verdict(verdict(flaky.chip_id, "inconsistent", "high", "an-0612", evidence[flaky.chip_id],
                                      "fp32 GEMM gives differing digests across sweeps (2 of 6)"), decided)
    from dataclasses import replace

    v_wrong = replace(v_wrong, k=4, n=4, statistic=31.0, p_value=2.1e-9)
    v_slow = replace(v_slow, k=6, n=6, statistic=-13.2, p_value=4.0e-7, score=0.93)
    v_flaky = replace(v_flaky, k=2, n=6, statistic=8.4, p_value=3.3e-5, score=0.88)
    records += [v_wrong, v_slow, v_flaky]
    records += [
        event(wrong.chip_id, "suspect", "healthy", v_wrong.verdict_id, at=decided - timedelta(days=2)),
        event(wrong.chip_id, "quarantined", "suspect", v_wrong.verdict_id, at=decided),
        event(slow.chip_id, "suspect", "healthy", v_slow.verdict_id, at=decided),
        event(flaky.chip_id, "quarantined", "suspect", v_flaky.verdict_id, at=decided),
        event(released.chip_id, "quarantined", "suspect", at=T0 + timedelta(days=1)),
        event(released.chip_id, "released", "quarantined", at=T0 + timedelta(days=2), actor="oncall:maria"),
    ]
    return records


def replace_verdict(v: Verdict, created_at: datetime) -> Verdict:
    from dataclasses import replace

    return replace(v, created_at=created_at, first_seen=T0 + timedelta(days=2), last_seen=created_at - timedelta(hours=6))
