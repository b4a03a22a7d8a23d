"""Scores a fault-injection campaign (campaign.py's JSON): for each faulty scenario, whether
the sentinel named the right rank, only that rank, within the window the issue asks for."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from campaign import COMPUTE_START, STATE_STEP


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
    audit_steps: tuple[int, ...] = ()  # the steps the (budgeted) audits ran at
    param_steps: tuple[int, ...] = ()  # the steps the (budgeted) parameter checks ran at


def window(scenario: dict, audit_steps: list[int], transient_step: int | None, param_steps: list[int]) -> tuple[int, int]:
    """The steps a finding must fall in, from the checks the sentinel actually ran (their period
    is stretched by the check budget): a state fault by the next parameter check, a transient
    at the audit it hit, a persistent fault by the first audit after it starts (one audit
    period), an intermittent one (hitting an audit with p = 0.5) by the second."""
    if scenario["target"] in ("param", "optimizer"):
        return STATE_STEP, next((s for s in param_steps if s > STATE_STEP), -1)  # one check period
    if scenario["timing"] == "transient":
        return (transient_step, transient_step) if transient_step is not None else (0, -1)
    after = [s for s in audit_steps if s >= COMPUTE_START] + [-1, -1]  # -1: the run ended first
    return COMPUTE_START, after[0 if scenario["timing"] == "persistent" else 1]


def score(out: Path) -> list[Outcome]:
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("campaign-rank*.json"))]
    outcomes = []
    for results in zip(*ranks):
        scenario = results[0]["scenario"]
        verdicts = results[0]["verdicts"]  # every rank reaches the same verdicts
        assert all(r["verdicts"] == verdicts and r["audit_steps"] == results[0]["audit_steps"]
                   and r["param_steps"] == results[0]["param_steps"] for r in results), scenario["name"]
        blamed = [v for v in verdicts if v["suspects"]]
        lo, hi = (window(scenario, results[0]["audit_steps"], results[0]["transient_step"], results[0]["param_steps"])
                  if scenario["target"] else (0, -1))
        right = [v for v in blamed if v["suspects"] == [scenario["rank"]] and lo <= v["step"] <= hi]
        wrong = [v for v in blamed if v["suspects"] != [scenario["rank"]]] if scenario["target"] else verdicts
        outcomes.append(Outcome(scenario["name"], scenario.get("timing"), scenario["target"], scenario["rank"],
                                bool(right), bool(wrong), any(v["diagnosis"] == "unattributed" for v in verdicts),
                                verdicts[0]["step"] if verdicts else None, tuple(results[0]["audit_steps"]),
                                tuple(results[0]["param_steps"])))
    return outcomes
