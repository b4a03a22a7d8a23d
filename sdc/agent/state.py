"""Restart bookkeeping of the agent: when each job last ran (``<data dir>/agent-state.json``),
and the first run a schedule missed while the agent was down."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Mapping

from sdc.files import atomic_write
from sdc.records import format_time, parse_time

log = logging.getLogger("sdc.agent")


def load_state(path: Path) -> dict[str, datetime]:
    try:
        raw = json.loads(path.read_text())
        return {name: parse_time(entry["last_run"]) for name, entry in raw.items()}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("agent state %s unreadable (%s); missed runs before this start are not caught up", path, exc)
        return {}


def save_state(path: Path, state: Mapping[str, datetime]) -> None:
    # atomic: a crash leaves the old file or the new one
    atomic_write(path, json.dumps({n: {"last_run": format_time(t)} for n, t in sorted(state.items())}, indent=2) + "\n")


def first_missed_run(trigger, last_run: datetime | None, now: datetime) -> datetime | None:
    """The first fire time after ``last_run`` that is already past, if any (pure)."""
    if last_run is None:
        return None
    fire = trigger.get_next_fire_time(None, last_run + timedelta(microseconds=1))
    return fire if fire is not None and fire <= now else None
