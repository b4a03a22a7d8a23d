"""The check schedule: one cost budget shared by every periodic check, a cap on the period
(in wall time, optionally in steps), and the ranks agreeing on the slowest rank's stretch and
the tightest cap so they check at the same steps."""

from __future__ import annotations

import pytest
import torch

from sdc.sentinel import SentinelConfig
from sdc.sentinel.config import SentinelConfigError
from sdc.sentinel.schedule import NO_CAP, SCALE, CheckSchedule, period_for, steps_within, stretch_for

EVERY = {"local": 20, "grads": 20, "params": 20, "audit": 20}


class Ranks:
    """The all-reduce(MAX) of a group whose other ranks propose the stretches ``others`` and
    the time caps (in steps) ``caps`` (none: no time cap)."""

    def __init__(self, others: list[int], caps: list[int] | None = None):
        self.others = others
        self.caps = caps or [NO_CAP] * len(others)
        self.seen: list[int] = []

    def max_(self, values: torch.Tensor) -> torch.Tensor:
        self.seen.append(int(values[0]))
        return torch.tensor([max([int(values[0]), *self.others]), max([int(values[1]), *(~c for c in self.caps)])])


def test_costs_that_fit_keep_the_base_periods_and_costs_that_do_not_stretch_all_alike():
    # 20 ms of checks per 20 steps is 1 ms a step: 1 % of a 100 ms step fits exactly.
    assert stretch_for({"grads": 0.005, "params": 0.015}, EVERY, 0.01, 0.100) == 1.0
    # Three times that (an audit on top) needs every period three times longer.
    assert abs(stretch_for({"grads": 0.005, "params": 0.015, "audit": 0.040}, EVERY, 0.01, 0.100) - 3.0) < 1e-9
    assert stretch_for({"audit": 1.0}, EVERY, 0.01, 0.0) == 1.0  # no step time yet: nothing to weigh against
    assert stretch_for({"audit": 1.0}, {**EVERY, "audit": 0}, 0.01, 0.1) == 1.0  # a check that is off costs nothing


def test_the_cap_bounds_the_period_but_never_shortens_a_longer_base_period():
    assert period_for(20, 3.0, 200) == 60
    assert period_for(20, 50.0, 200) == 200
    assert period_for(20, 50.0, 0) == 1000  # no cap
    assert period_for(500, 2.0, 200) == 500  # a base period past the cap is kept, not stretched


def _run(schedule: CheckSchedule, comm: Ranks, steps: int, costs: dict[str, float], step_seconds: float) -> list[int]:
    """Drive the schedule as the sentinel does, with measured costs and a fixed step time."""
    checked = []
    for step in range(steps):
        schedule._step_times.extend([step_seconds] * 2)  # a steady step clock
        due = schedule.due_kinds(step)
        if due:
            checked.append(step)
            schedule.agree(comm, step)
            schedule.agree(comm, step)  # on_grads_ready and on_step_end: agreed once
            for kind in due:
                schedule._measured[kind] = costs[kind]
        schedule.end_step(step)
    return checked


def test_the_slowest_rank_sets_the_period_and_every_check_stays_on_one_cycle():
    costs = {"local": 0.002, "grads": 0.002, "params": 0.004, "audit": 0.032}  # 40 ms a cycle
    here = CheckSchedule(EVERY, budget=0.01, cap=200)
    comm = Ranks(others=[5 * SCALE])  # another rank needs every period five times longer
    checked = _run(here, comm, 400, costs, 0.1)
    assert here.stretch == 5.0 and set(here.period.values()) == {100}
    assert checked == [0, 100, 200, 300]
    assert len(comm.seen) == len(checked)  # one agreement per check step, none elsewhere
    # Left to itself this rank needs 2x (40 ms per 20 steps against 1 ms a step).
    alone = CheckSchedule(EVERY, budget=0.01, cap=200)
    assert _run(alone, Ranks([]), 200, costs, 0.1)[2:5] == [40, 80, 120]


def test_a_slow_machine_is_held_to_the_cap():
    here = CheckSchedule(EVERY, budget=0.01, cap=50)
    checked = _run(here, Ranks([]), 300, {"local": 0, "grads": 0, "params": 0, "audit": 5.0}, 0.1)
    assert all(b - a == 50 for a, b in zip(checked[2:], checked[3:])) and here.period["audit"] == 50


def test_the_time_cap_bounds_the_period_in_wall_time_at_the_step_time():
    assert steps_within(300.0, 0.1) == 3000 and steps_within(300.0, 0.0) == 0 and steps_within(0.0, 0.1) == 0
    assert steps_within(1.0, 5.0) == 1  # a step longer than the cap: one step (the base period still wins)
    costs = {"local": 0, "grads": 0, "params": 0, "audit": 5.0}  # needs a stretch of 250 at 100 ms steps
    # 3 s of 100 ms steps is 30 steps; no step cap.
    here = CheckSchedule(EVERY, budget=0.01, cap=0, max_seconds=3.0)
    checked = _run(here, Ranks([]), 200, costs, 0.1)
    assert here.period["audit"] == 30 and all(b - a == 30 for a, b in zip(checked[2:], checked[3:])), checked
    # 60 s allows 600 steps: the budget's 5000 is held to it.
    roomy = CheckSchedule(EVERY, budget=0.01, cap=0, max_seconds=60.0)
    _run(roomy, Ranks([]), 100, costs, 0.1)
    assert roomy.period["audit"] == 600
    # The step cap and the time cap together: the tighter wins.
    both = CheckSchedule(EVERY, budget=0.01, cap=400, max_seconds=60.0)
    _run(both, Ranks([]), 100, costs, 0.1)
    assert both.period["audit"] == 400
    # A time cap below the base period never shortens it.
    short = CheckSchedule(EVERY, budget=0.01, cap=0, max_seconds=0.5)
    _run(short, Ranks([]), 100, costs, 0.1)
    assert short.period["audit"] == 20


def test_the_ranks_take_the_tightest_time_cap_so_that_none_names_a_fault_late():
    costs = {"local": 0, "grads": 0, "params": 0, "audit": 5.0}
    here = CheckSchedule(EVERY, budget=0.01, cap=0, max_seconds=60.0)  # 600 steps here
    _run(here, Ranks([0], caps=[120]), 100, costs, 0.1)  # another rank's steps are 5x shorter
    assert here.period["audit"] == 120
    alone_uncapped = CheckSchedule(EVERY, budget=0.01, cap=0, max_seconds=0.0)
    _run(alone_uncapped, Ranks([0]), 100, costs, 0.1)
    assert alone_uncapped.period["audit"] == 5000  # no cap anywhere: the budget alone


def test_only_the_kinds_that_are_on_are_scheduled_and_a_schedule_with_none_is_always_quiet():
    schedule = CheckSchedule({**EVERY, "gemm": 50}, budget=0.01, cap=0)
    assert schedule.due_kinds(0) == ["local", "grads", "params", "audit", "gemm"]
    off = CheckSchedule({}, budget=0.01, cap=0)
    comm = Ranks([])
    assert _run(off, comm, 50, {}, 0.1) == [] and comm.seen == [] and all(off.quiet(s) for s in range(50))


def test_the_sentinels_every_step_work_comes_out_of_the_budget():
    schedule = CheckSchedule(EVERY, budget=0.01, cap=0)
    schedule._step_times.extend([0.1] * 4)
    schedule._every_step.extend([0.0005] * 4)  # half the budget goes to every step's work
    assert abs(schedule.allowance() - 0.005) < 1e-12
    schedule._every_step.extend([0.05] * 8)  # more than the budget: a tenth is kept for the checks
    assert abs(schedule.allowance() - 0.001) < 1e-12


def test_without_a_budget_every_check_runs_exactly_at_its_base_period_without_agreement():
    schedule = CheckSchedule({**EVERY, "params": 30}, budget=0.0, cap=200)
    comm = Ranks(others=[50 * SCALE])
    checked = _run(schedule, comm, 100, {"local": 1.0, "grads": 1.0, "params": 1.0, "audit": 1.0}, 0.1)
    assert checked == [0, 20, 30, 40, 60, 80, 90] and comm.seen == []
    assert schedule.details("params", 30) == {"check_period": 30, "next_check_step": 60}


def test_the_budget_and_cap_settings():
    defaults = SentinelConfig()
    assert defaults.check_budget == 0.01 and defaults.max_check_seconds == 300.0 and defaults.max_check_period == 0
    assert SentinelConfig(audit_budget=0).check_budget == 0  # the former, audits-only name
    for bad in (dict(check_budget=1.0), dict(check_budget=-0.1), dict(max_check_period=-1), dict(max_check_seconds=-1),
                dict(max_check_seconds="5 min")):
        with pytest.raises(SentinelConfigError):
            SentinelConfig(**bad)
