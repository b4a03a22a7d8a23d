"""Shared fixtures. Store tests run on SQLite always and on PostgreSQL when
SDC_TEST_DATABASE_URL is set (CI sets it); each PostgreSQL test gets its own schema."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text

from sdc.store import Store
from sdc.store.engine import normalise_url
from sdc.store.migrate import upgrade

PG_URL = os.environ.get("SDC_TEST_DATABASE_URL")


def _pg_schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{normalise_url(PG_URL)}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """An empty database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sdc.db'}"
        return
    if not PG_URL:
        pytest.skip("SDC_TEST_DATABASE_URL not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalise_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _pg_schema_url(schema)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def migrated_url(db_url):
    """A database URL at schema head."""
    upgrade(db_url)
    return db_url


@pytest.fixture
def store(migrated_url, tmp_path):
    s = Store(migrated_url, tmp_path / "outbox")
    yield s
    s.dispose()


@pytest.fixture
def sdc_env(tmp_path, monkeypatch):
    """Environment for running the CLI against a private data directory."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("SDC_DATABASE_URL", raising=False)
    monkeypatch.delenv("SDC_CONFIG", raising=False)
    return tmp_path


pytest_plugins = ["tests.fleet_fixtures"]


@pytest.fixture(autouse=True)
def _testdev_unplugged_after_each_test():
    """A test that plugged in the PrivateUse1 test backend (tests/testdev) leaves no devices
    behind: later tests in the process see a machine without accelerators again."""
    yield
    from tests.testdev import unplug

    unplug()
