"""Migrations: empty -> head -> base -> head on each backend; models and migrations agree;
every command that touches the database refuses a schema that is not at head."""

from __future__ import annotations

import json
import typing

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import JSON, BigInteger, Integer, String, Text, inspect, text

from sdc.records import BY_KIND, INT64_FIELDS, MAX_LENGTH
from sdc.store.engine import make_engine
from sdc.store.migrate import (
    current_revision,
    downgrade,
    head_revision,
    revision,
    upgrade,
)
from sdc.store.models import ROW_TYPES, Base
from tests.store import samples
from tests.store.samples import run

SDC_TABLES = {row.__tablename__ for row in ROW_TYPES.values()}


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(db_url):
    assert _tables(db_url) & SDC_TABLES == set()
    assert upgrade(db_url) == (None, head_revision())
    assert SDC_TABLES <= _tables(db_url)
    assert upgrade(db_url) == (head_revision(), head_revision())  # a second upgrade is a no-op

    assert downgrade(db_url, "base") == (head_revision(), None)
    assert _tables(db_url) & SDC_TABLES == set()

    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_models_and_migrations_agree(migrated_url):
    engine = make_engine(migrated_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", sorted(ROW_TYPES))
def test_models_hold_every_record_field_within_its_limits(kind):
    """A record that passes validation fits its row: same fields, lengths and integer widths."""
    from dataclasses import fields

    table = ROW_TYPES[kind].__table__
    hints = typing.get_type_hints(BY_KIND[kind])
    names = [f.name for f in fields(BY_KIND[kind])]
    assert set(table.columns.keys()) - {"case_key"} == set(names)
    for name in names:
        column_type = table.c[name].type
        choices = typing.get_args(hints[name]) if typing.get_origin(hints[name]) is typing.Literal else ()
        if choices:
            assert max(map(len, choices)) <= column_type.length, name
        elif isinstance(column_type, String) and not isinstance(column_type, Text) and column_type.length:
            assert MAX_LENGTH.get(name) == column_type.length, name
        elif isinstance(column_type, (Text, JSON)):
            assert name not in MAX_LENGTH, name
        if isinstance(column_type, BigInteger):
            assert name in INT64_FIELDS, name
        elif isinstance(column_type, Integer):
            assert name not in INT64_FIELDS, name


@pytest.fixture
def spool_file(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(samples.jsonl(samples.one_of_each(3)))
    return path


def _database_commands(spool_file, tmp_path):
    return [
        ["ingest", str(spool_file)],
        ["export"],
        ["sweep", "--devices", "cpu:0"],
        ["flush"],
    ]


def test_every_database_command_refuses_an_empty_schema(db_url, spool_file, tmp_path, sdc_env):
    # Give flush something to deliver, so it has to touch the database.
    outbox = tmp_path / "data" / "sdc" / "outbox"
    outbox.mkdir(parents=True)
    (outbox / "00000000000000000001-test-x.jsonl").write_text(spool_file.read_text())
    for args in _database_commands(spool_file, tmp_path):
        result = run(db_url, *args)
        assert result.exit_code == 2, (args, result.output)
        assert "run 'sdc db upgrade'" in result.output, (args, result.output)
    result = run(db_url, "db", "current")
    assert result.exit_code == 2 and "sdc db upgrade" in result.output
    assert _tables(db_url) & SDC_TABLES == set()  # nothing was created behind the user's back


def test_commands_refuse_a_schema_from_an_unknown_revision(migrated_url, spool_file, tmp_path, sdc_env):
    engine = make_engine(migrated_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'ffff99'"))
    engine.dispose()
    for args in _database_commands(spool_file, tmp_path)[:3]:
        result = run(migrated_url, *args)
        assert result.exit_code == 2, (args, result.output)
        assert "ffff99" in result.output and "upgrade" in result.output, (args, result.output)


def test_db_upgrade_against_a_newer_schema_names_both_revisions(migrated_url, sdc_env):
    engine = make_engine(migrated_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'ffff99'"))
    engine.dispose()
    for args in (["db", "upgrade"], ["db", "downgrade", "base"]):
        result = run(migrated_url, *args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert "at schema revision ffff99" in result.output and f"knows up to {head_revision()}" in result.output
        assert "nothing was changed" in result.output


def test_db_upgrade_and_current_through_the_cli(db_url, sdc_env):
    result = run(db_url, "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert f"upgraded empty -> {head_revision()}" in result.output
    result = run(db_url, "--json", "db", "current")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"current": head_revision(), "head": head_revision(), "at_head": True}


def test_revision_autogenerates_nothing_when_models_and_migrations_agree(tmp_path):
    url = f"sqlite:///{tmp_path / 'scratch.db'}"
    upgrade(url)
    versions = tmp_path / "versions"
    versions.mkdir()
    path = revision(url, "nothing changed", str(versions))
    assert path.endswith("_nothing_changed.py")
    source = open(path).read()
    assert "down_revision: Union[str, None] = '0001'" in source or "down_revision" in source
    body = source.split("def upgrade() -> None:")[1].split("def downgrade")[0]
    assert "op." not in body  # models and migrations agree: nothing to do
