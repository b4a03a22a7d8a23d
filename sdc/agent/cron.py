"""Crontab strings with cron's meaning, turned into APScheduler 3 triggers.

APScheduler 3's ``CronTrigger`` is not cron: it numbers the days of the week from Monday = 0
(cron: Sunday = 0, and 7 is Sunday again), reads ``*/2`` in the day-of-week field from Monday,
and ANDs day-of-month with day-of-week where cron ORs them when both are restricted
(``0 0 1 * 1`` is "the 1st, and every Monday"). So each field is expanded here with cron's
rules into explicit values; day-of-week values become names (``sun``, ``mon`` ...) that both
agree on; and a restricted day-of-month *and* day-of-week become an ``OrTrigger``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# (name, lowest, highest, names for lowest.. or None)
FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, MONTH_NAMES),
    ("day of week", 0, 7, DAY_NAMES),
)


class CronError(ValueError):
    """A crontab string that cron would not accept; the message names the field."""


@dataclass(frozen=True)
class CronSpec:
    """A parsed crontab line: the set of values of each field, and which day fields were '*'."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # cron numbering: 0 = Sunday ... 6 = Saturday
    days_star: bool
    weekdays_star: bool


def _value(token: str, field: str, lo: int, hi: int, names, expr: str) -> int:
    if names and token.lower() in names:
        return names.index(token.lower()) + lo
    try:
        value = int(token)
    except ValueError:
        hint = f" or a name ({', '.join(names)})" if names else ""
        raise CronError(f"crontab {expr!r}: {field} value {token!r} is not a number{hint}") from None
    if not lo <= value <= hi:
        raise CronError(f"crontab {expr!r}: {field} value {value} is out of range {lo}-{hi}")
    return value


def _field(text: str, field: str, lo: int, hi: int, names, expr: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"crontab {expr!r}: empty item in {field} field {text!r}")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"crontab {expr!r}: {field} step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = _value(a, field, lo, hi, names, expr), _value(b, field, lo, hi, names, expr)
            if start > end:
                raise CronError(f"crontab {expr!r}: {field} range {base!r} runs backwards")
        else:
            start = _value(base, field, lo, hi, names, expr)
            end = hi if step_text else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse(expr: str) -> CronSpec:
    """Parse a five-field crontab string (or an @alias) with cron's rules."""
    text = ALIASES.get(expr.strip().lower(), expr.strip())
    parts = text.split()
    if len(parts) != 5:
        raise CronError(
            f"crontab {expr!r}: expected 5 fields (minute hour day-of-month month day-of-week) "
            f"or one of {', '.join(ALIASES)}; got {len(parts)}"
        )
    sets = [_field(p, name, lo, hi, names, expr) for p, (name, lo, hi, names) in zip(parts, FIELDS)]
    weekdays = frozenset(d % 7 for d in sets[4])  # 7 is Sunday too
    return CronSpec(sets[0], sets[1], sets[2], sets[3], weekdays, parts[2].startswith("*"), parts[4].startswith("*"))


def _join(values: frozenset[int]) -> str:
    return ",".join(str(v) for v in sorted(values))


def trigger(expr: str, jitter: int | None = None, timezone: Any = None):
    """An APScheduler 3 trigger that fires exactly when cron would run ``expr``.

    ``jitter`` adds a uniformly random 0..jitter seconds to each fire time, so a fleet whose
    nodes share one crontab does not hit the database (or the power budget) at one instant.
    """
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    spec = parse(expr)
    common = dict(minute=_join(spec.minutes), hour=_join(spec.hours), month=_join(spec.months), timezone=timezone)
    weekdays = ",".join(DAY_NAMES[d] for d in sorted(spec.weekdays))
    if not spec.days_star and not spec.weekdays_star:
        return OrTrigger(
            [CronTrigger(day=_join(spec.days), **common), CronTrigger(day_of_week=weekdays, **common)],
            jitter=jitter or None,
        )
    # '*/2' starts with '*' (cron's test for the OR rule) yet still restricts the values.
    return CronTrigger(
        day=_join(spec.days) if len(spec.days) < 31 else "*",
        day_of_week=weekdays if len(spec.weekdays) < 7 else "*",
        jitter=jitter or None,
        **common,
    )
