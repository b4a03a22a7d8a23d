"""Scores a fault-injection campaign (campaign.py's JSON): for each faulty scenario, whether
the sentinel named the right rank, only that rank, within the window the issue asks for."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from campaign import COMPUTE_START, STATE_STEP, TRANSIENT_AUDIT_STEP

AUDIT_EVERY = CHECK_EVERY = 20  # the defaults the campaign runs at


@dataclass(frozen=True)
class Outcome:
    name: str
    timing: str | None
    target: str | None
    rank: int | None
    named: bool  # the right rank, alone, within the window
    wrong: bool  # some other rank named, or a false alarm on a healthy run
    unattributed: bool  # seen, not attributed (two replicas, each reproducing itself)
    first: int | None  # first step with a finding


def window(scenario: dict) -> tuple[int, int]:
    if scenario["target"] in ("param", "optimizer"):
        return STATE_STEP, STATE_STEP + CHECK_EVERY
    if scenario["timing"] == "transient":
        return TRANSIENT_AUDIT_STEP, TRANSIENT_AUDIT_STEP
    return COMPUTE_START, COMPUTE_START + 2 * AUDIT_EVERY  # the first two audits after the fault starts


def score(out: Path) -> list[Outcome]:
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("campaign-rank*.json"))]
    outcomes = []
    for results in zip(*ranks):
        scenario = results[0]["scenario"]
        verdicts = results[0]["verdicts"]  # every rank reaches the same verdicts
        assert all(r["verdicts"] == verdicts for r in results), scenario["name"]
        blamed = [v for v in verdicts if v["suspects"]]
        lo, hi = window(scenario) if scenario["target"] else (0, -1)
        right = [v for v in blamed if v["suspects"] == [scenario["rank"]] and lo <= v["step"] <= hi]
        wrong = [v for v in blamed if v["suspects"] != [scenario["rank"]]] if scenario["target"] else verdicts
        outcomes.append(Outcome(scenario["name"], scenario.get("timing"), scenario["target"], scenario["rank"],
                                bool(right), bool(wrong), any(v["diagnosis"] == "unattributed" for v in verdicts),
                                verdicts[0]["step"] if verdicts else None))
    return outcomes
