"""Settings: command-line flags > environment (SDC_*) > config file > defaults.

The config file is TOML, at ``$SDC_CONFIG`` or ``~/.config/sdc/config.toml``. Top-level
keys are the basic settings (``database_url``, ``data_dir``, ``outbox_dir``); each subsystem
reads its own table (``[analysis]``, ``[agent]``, ``[sentinel]`` ...) through ``section()``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    pass


# Top-level keys of the config file; tables ([analysis], [agent], ...) belong to subsystems.
BASIC_KEYS = ("database_url", "data_dir", "outbox_dir")
# Top-level keys whose value is a list of strings (sdc.node.backends reads this one).
LIST_KEYS = ("backend_modules",)


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Per-user data directory: $XDG_DATA_HOME/sdc, else ~/.local/share/sdc."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "sdc"


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sdc" / "config.toml"


@dataclass(frozen=True)
class Settings:
    database_url: str
    data_dir: Path
    outbox_dir: Path
    config_path: Path | None = None
    tables: Mapping[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        """One table of the config file (e.g. ``[analysis]``), empty if absent."""
        value = self.tables.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"config: [{name}] must be a table in {self.config_path}")
        return dict(value)


def load_settings(
    database_url: str | None = None,
    config_path: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve settings. Arguments are the command-line flags (None when not given)."""
    env = os.environ if environ is None else environ
    path = Path(config_path or env.get("SDC_CONFIG") or default_config_path(env)).expanduser()
    tables: dict[str, Any] = {}
    if path.exists():
        try:
            tables = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config: cannot read {path}: {exc}") from None
    elif config_path or env.get("SDC_CONFIG"):
        raise ConfigError(f"config: {path} does not exist")
    _check_basic_keys(path, tables)

    data_dir = Path(env.get("SDC_DATA_DIR") or tables.get("data_dir") or default_data_dir(env)).expanduser()
    url = database_url or env.get("SDC_DATABASE_URL") or tables.get("database_url") or f"sqlite:///{data_dir / 'sdc.db'}"
    outbox = Path(env.get("SDC_OUTBOX_DIR") or tables.get("outbox_dir") or data_dir / "outbox").expanduser()
    return Settings(
        database_url=str(url),
        data_dir=data_dir,
        outbox_dir=outbox,
        config_path=path if path.exists() else None,
        tables=tables,
    )


def _check_basic_keys(path: Path, tables: Mapping[str, Any]) -> None:
    for key, value in tables.items():
        if isinstance(value, dict):
            continue
        if key in LIST_KEYS:
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"config: '{key}' in {path} must be a list of names, e.g. {key} = [\"torch_npu\"]")
            continue
        if key not in BASIC_KEYS:
            raise ConfigError(
                f"config: unknown setting '{key}' in {path} (known: {', '.join(BASIC_KEYS + LIST_KEYS)}, or a [table])"
            )
        if not isinstance(value, str) or not value:
            raise ConfigError(f"config: '{key}' in {path} must be a non-empty string")


def safe_url(url: str) -> str:
    """A database URL fit to print: the password masked."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
