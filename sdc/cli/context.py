"""What every command shares: settings, the store, output helpers, and error-to-exit-code mapping."""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import click

from sdc.config import ConfigError, Settings, load_settings
from sdc.exitcodes import ExitCode

if TYPE_CHECKING:
    from rich.console import Console

    from sdc.store import Store

# rich and sdc.store are imported where used: `sdc check` runs every minute on every node
# and must not pay for them (see benchmarks/bench_check.py).


@dataclass
class AppContext:
    db: str | None = None
    config: str | None = None
    json_output: bool = False
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(database_url=self.db, config_path=self.config)
        return self._settings

    def store(self) -> Store:
        from sdc.store import Store

        return Store(self.settings.database_url, self.settings.outbox_dir)

    @property
    def out(self) -> Console:
        from rich.console import Console

        return Console(highlight=False, soft_wrap=True)

    @property
    def err(self) -> Console:
        from rich.console import Console

        return Console(stderr=True, highlight=False, soft_wrap=True)

    def emit_json(self, value: Any) -> None:
        sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


pass_app = click.make_pass_decorator(AppContext, ensure=True)


def fail(message: str, code: ExitCode = ExitCode.UNKNOWN) -> None:
    """One line on stderr and the exit code; the message may quote record strings or another
    program's output, so control characters (ESC, BEL, newlines) never reach the terminal."""
    from sdc.safe_text import terminal_text

    click.echo(f"sdc: {terminal_text(message)}", err=True)
    sys.exit(int(code))


def handles_errors(func: Callable) -> Callable:
    """Turn the errors a user can act on into one clear line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from sqlalchemy.exc import OperationalError

        from sdc.store import StoreError

        try:
            return func(*args, **kwargs)
        except (StoreError, ConfigError) as exc:
            fail(str(exc))
        except OperationalError as exc:
            reason = str(exc.orig or exc).strip().splitlines()[0][:300]
            fail(f"cannot reach the database: {reason}")

    return wrapper
