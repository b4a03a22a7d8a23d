"""Settings precedence: command-line flags > environment (SDC_*) > config file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sdc.cli import cli
from sdc.config import ConfigError, load_settings


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        'database_url = "sqlite:////from/file.db"\n'
        'data_dir = "/from/file/data"\n'
        "[analysis]\nfdr = 0.01\n"
    )
    return path


def test_defaults_follow_xdg(tmp_path):
    s = load_settings(environ={"XDG_DATA_HOME": str(tmp_path / "xdg"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert s.data_dir == tmp_path / "xdg" / "sdc"
    assert s.database_url == f"sqlite:///{tmp_path / 'xdg' / 'sdc' / 'sdc.db'}"
    assert s.outbox_dir == tmp_path / "xdg" / "sdc" / "outbox"
    assert s.config_path is None and s.section("analysis") == {}


def test_file_beats_defaults(config_file):
    s = load_settings(config_path=config_file, environ={})
    assert s.database_url == "sqlite:////from/file.db"
    assert s.data_dir == Path("/from/file/data")
    assert s.outbox_dir == Path("/from/file/data/outbox")
    assert s.section("analysis") == {"fdr": 0.01}


def test_environment_beats_file(config_file):
    env = {"SDC_CONFIG": str(config_file), "SDC_DATABASE_URL": "sqlite:////from/env.db", "SDC_DATA_DIR": "/from/env"}
    s = load_settings(environ=env)
    assert s.database_url == "sqlite:////from/env.db"
    assert s.data_dir == Path("/from/env")
    assert s.outbox_dir == Path("/from/env/outbox")
    assert s.section("analysis") == {"fdr": 0.01}  # the file still supplies what env does not


def test_flags_beat_environment(config_file):
    env = {"SDC_CONFIG": "/nonexistent.toml", "SDC_DATABASE_URL": "sqlite:////from/env.db"}
    s = load_settings(database_url="sqlite:////from/flag.db", config_path=config_file, environ=env)
    assert s.database_url == "sqlite:////from/flag.db"
    assert s.config_path == config_file


def test_missing_or_broken_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_path=tmp_path / "nope.toml", environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("database_url = \n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(config_path=broken, environ={})
    typo = tmp_path / "typo.toml"
    typo.write_text("databse_url = 'sqlite://'\n")
    with pytest.raises(ConfigError, match="unknown setting 'databse_url'"):
        load_settings(config_path=typo, environ={})


def test_cli_flag_env_and_file_reach_the_commands(config_file, tmp_path, monkeypatch):
    """The order holds through the real command line (``db current`` prints the URL it used)."""
    monkeypatch.delenv("SDC_DATABASE_URL", raising=False)
    monkeypatch.setenv("SDC_CONFIG", str(config_file))
    file_db, env_db, flag_db = (f"sqlite:///{tmp_path / n}.db" for n in ("file", "env", "flag"))
    config_file.write_text(f'database_url = "{file_db}"\n')
    runner = CliRunner()
    assert f"{tmp_path}/file.db" in runner.invoke(cli, ["db", "current"]).output
    monkeypatch.setenv("SDC_DATABASE_URL", env_db)
    assert f"{tmp_path}/env.db" in runner.invoke(cli, ["db", "current"]).output
    assert f"{tmp_path}/flag.db" in runner.invoke(cli, ["--db", flag_db, "db", "current"]).output
    bad = runner.invoke(cli, ["--config", str(tmp_path / "missing.toml"), "db", "current"])
    assert bad.exit_code == 2 and "does not exist" in bad.output
