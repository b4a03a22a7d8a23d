"""What every command shares: settings, the store, output helpers, and error-to-exit-code mapping."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

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
    debug: bool = False
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
    """Turn any error into one clear line and exit code 2 (see ``error_boundary``)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with error_boundary():
            return func(*args, **kwargs)

    return wrapper


# Exceptions click uses for its own flow (usage errors, --help, exit codes): not ours to map.
_CLICK_FLOW = (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort)


@contextlib.contextmanager
def error_boundary() -> Iterator[None]:
    """The CLI's one error boundary: any exception becomes ``sdc: <one line>`` and exit 2.

    Exit 1 means "fault found" and drains nodes, so an error must never leave with it (Python
    gives 1 to an uncaught exception). The full traceback is printed only with ``--debug``
    (or ``SDC_DEBUG=1``).
    """
    try:
        yield
    except _CLICK_FLOW:
        raise
    except Exception as exc:
        app = _current_app()
        if (app is not None and app.debug) or os.environ.get("SDC_DEBUG") == "1":
            traceback.print_exc()
        fail(describe_error(exc, _database_url(app)))


def _current_app() -> AppContext | None:
    ctx = click.get_current_context(silent=True)
    return ctx.find_object(AppContext) if ctx is not None else None


def _database_url(app: AppContext | None) -> str | None:
    if app is None:
        return None
    try:
        return app.settings.database_url
    except Exception:  # the settings themselves are what is broken
        return app.db


def describe_error(exc: BaseException, url: str | None = None) -> str:
    """One line that says what went wrong and what to do (no traceback, no password)."""
    from sdc.store.engine import describe_database_error

    if isinstance(exc, ConfigError):
        return str(exc)
    described = describe_database_error(exc, url)
    if described is not None:
        return described
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    text = " ".join(str(exc).split())[:300]
    return f"internal error: {type(exc).__name__}: {text} (run with --debug for the traceback)"
