"""Crontab strings mean what cron means, including the day-of-week numbering APScheduler 3 differs on."""

from datetime import datetime, timedelta, timezone

import pytest

from sdc.agent import cron
from sdc.agent.state import first_missed_run

UTC = timezone.utc
SAT_NOON = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # a Saturday


def fires(expr, start=SAT_NOON, count=6, jitter=None):
    trigger = cron.trigger(expr, jitter=jitter, timezone=UTC)
    out, previous, now = [], None, start
    for _ in range(count):
        nxt = trigger.get_next_fire_time(previous, now)
        out.append(nxt)
        previous, now = nxt, nxt + timedelta(seconds=1)
    return out


def test_sunday_is_zero_like_cron():
    times = fires("0 3 * * 0")
    assert all(t.strftime("%A %H:%M") == "Sunday 03:00" for t in times)
    assert times[0] == datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "expr, days",
    [
        ("0 3 * * 7", {"Sunday"}),
        ("0 3 * * 1-5", {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday"}),
        ("0 3 * * */2", {"Sunday", "Tuesday", "Thursday", "Saturday"}),
        ("0 3 * * sat,SUN", {"Saturday", "Sunday"}),
        ("@weekly", {"Sunday"}),
    ],
)
def test_day_of_week_values(expr, days):
    assert {t.strftime("%A") for t in fires(expr, count=14)} == days


def test_day_of_month_or_day_of_week_when_both_restricted():
    # cron: "the 1st of the month, and every Monday" — not "Mondays that are the 1st".
    times = fires("0 0 1 * 1", count=8)
    assert all(t.day == 1 or t.strftime("%A") == "Monday" for t in times)
    assert any(t.day == 1 and t.strftime("%A") != "Monday" for t in times)
    assert any(t.strftime("%A") == "Monday" and t.day != 1 for t in times)


def test_minutes_hours_steps_and_aliases():
    assert [t.strftime("%H:%M") for t in fires("*/20 9-10 * * *", count=6)] == [
        "09:00", "09:20", "09:40", "10:00", "10:20", "10:40",
    ]
    assert fires("@hourly", start=SAT_NOON + timedelta(seconds=1), count=1)[0] == datetime(2026, 11, 28, 13, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "expr, words",
    [
        ("0 3 * *", "expected 5 fields"),
        ("0 3 * * 8", "day of week value 8 is out of range 0-7"),
        ("61 * * * *", "minute value 61"),
        ("0 3 * * funday", "not a number"),
        ("0 5-3 * * *", "runs backwards"),
        ("*/0 * * * *", "step"),
    ],
)
def test_bad_crontab_is_named(expr, words):
    with pytest.raises(cron.CronError, match=words):
        cron.parse(expr)


def test_jitter_stays_within_bounds_and_spreads():
    trigger = cron.trigger("0 3 * * 0", jitter=600, timezone=UTC)
    base = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    delays = [(trigger.get_next_fire_time(None, SAT_NOON) - base).total_seconds() for _ in range(2000)]
    assert min(delays) >= 0 and max(delays) <= 600
    # Spread over the window: each tenth of it gets a share (expected 200 of 2000 each).
    tenths = [sum(1 for d in delays if k * 60 <= d < (k + 1) * 60) for k in range(10)]
    assert min(tenths) > 120


def test_first_missed_run_after_downtime():
    trigger = cron.trigger("0 * * * *", timezone=UTC)
    last = datetime(2026, 11, 28, 9, 0, 5, tzinfo=UTC)
    assert first_missed_run(trigger, last, SAT_NOON) == datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    half_past = SAT_NOON + timedelta(minutes=30)
    assert first_missed_run(trigger, half_past - timedelta(minutes=5), half_past) is None
    assert first_missed_run(trigger, None, SAT_NOON) is None
