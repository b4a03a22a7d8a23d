"""The agent's configuration: the ``[agent]`` table of the config file merged with flags (flags
win), every schedule validated when the agent starts, not when a job first fires."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from sdc.agent import cron
from sdc.config import ConfigError, Settings
from sdc.node.busy import BusyPolicy

JOB_NAMES = ("sweep", "analyze", "report")
SUITES = ("quick", "standard", "burn")
REPORT_FORMATS = ("html", "json", "markdown", "table")


@dataclass(frozen=True)
class JobSpec:
    name: str
    schedule: str
    jitter: int = 0


@dataclass(frozen=True)
class AgentConfig:
    jobs: tuple[JobSpec, ...]
    state_file: Path
    suite: str = "quick"
    devices: str | None = None
    repeats: int = 3
    seed: int = 0
    misfire_grace_time: int = 3600
    report_path: Path | None = None
    report_format: str = "html"
    analyze_dry_run: bool = False
    busy_check: bool = True
    busy: BusyPolicy = field(default_factory=BusyPolicy)
    defer_retry: int = 600
    max_defers: int = 3
    timezone: str | None = None
    run_now: bool = False
    # The same sweep settings as `sdc sweep --case-timeout --budget --duration`.
    case_timeout_s: float = 120.0
    budget_s: float | None = None
    burn_duration_s: float = 60.0
    catalog: Path | None = None  # a harvested catalog the sweep replays (`sdc sweep --catalog`)


def _int(section: Mapping[str, Any], key: str, default: int, low: int = 0) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"config: [agent] {key} must be a whole number >= {low}, got {value!r}")
    return value


def _seconds(section: Mapping[str, Any], key: str, default: float | None) -> float | None:
    value = section.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"config: [agent] {key} must be a number of seconds > 0, got {value!r}")
    return float(value)


def agent_config(settings: Settings, flags: Mapping[str, Any]) -> AgentConfig:
    """Merge the ``[agent]`` table with flags (flags win); validate every schedule now."""
    section = settings.section("agent")
    merged = {**section, **{k: v for k, v in flags.items() if v is not None}}
    jobs = []
    for name in JOB_NAMES:
        schedule = merged.get(name)
        if schedule in (None, "", False):
            continue
        if not isinstance(schedule, str):
            raise ConfigError(f"config: [agent] {name} must be a crontab string such as '0 3 * * 0', got {schedule!r}")
        try:
            cron.parse(schedule)
        except cron.CronError as exc:
            raise ConfigError(f"agent: {name}: {exc}") from None
        jobs.append(JobSpec(name, schedule, _int(merged, f"{name}_jitter", 0)))
    if not jobs:
        raise ConfigError(
            "agent: no job scheduled; give --sweep CRON (and/or --analyze, --report) or set them in the [agent] table "
            f"of {settings.config_path or 'the config file'}"
        )
    suite = merged.get("suite", "quick")
    if suite not in SUITES:
        raise ConfigError(f"config: [agent] suite must be one of {', '.join(SUITES)}, got {suite!r}")
    fmt = merged.get("report_format", "html")
    if fmt not in REPORT_FORMATS:
        raise ConfigError(f"config: [agent] report_format must be one of {', '.join(REPORT_FORMATS)}, got {fmt!r}")
    suffix = {"html": "html", "json": "json", "markdown": "md", "table": "txt"}[fmt]
    return AgentConfig(
        jobs=tuple(jobs),
        state_file=Path(merged.get("state_file") or settings.data_dir / "agent-state.json").expanduser(),
        suite=suite,
        devices=merged.get("devices") or None,
        repeats=_int(merged, "repeats", 3, 1),
        seed=_int(merged, "seed", 0),
        misfire_grace_time=_int(merged, "misfire_grace_time", 3600, 1),
        report_path=Path(merged.get("report_path") or settings.data_dir / f"report.{suffix}").expanduser(),
        report_format=fmt,
        analyze_dry_run=bool(merged.get("analyze_dry_run", False)),
        busy_check=bool(merged.get("busy_check", True)),
        busy=BusyPolicy(float(merged.get("busy_utilization", 10.0)), float(merged.get("busy_load", 0.9))),
        defer_retry=_int(merged, "defer_retry", 600, 1),
        max_defers=_int(merged, "max_defers", 3),
        timezone=merged.get("timezone") or None,
        run_now=bool(merged.get("run_now", False)),
        case_timeout_s=_seconds(merged, "case_timeout", 120.0),
        budget_s=_seconds(merged, "budget", None),
        burn_duration_s=_seconds(merged, "duration", 60.0),
        catalog=Path(merged["catalog"]).expanduser() if merged.get("catalog") else None,
    )
