"""Schema migrations as plain functions (the CLI's ``sdc db ...`` calls these)."""

from __future__ import annotations

from importlib import resources

from typing import TYPE_CHECKING

from sqlalchemy import Engine

from sdc.store.engine import StoreError, make_engine, normalise_url

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported inside the functions: importing it costs ~0.3 s, and read-only fast
# paths such as `sdc check` import sdc.store without ever migrating.


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("sdc.migrations")))
    # ConfigParser interpolation would mangle '%' in passwords.
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return script.get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(url: str, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the database at ``url``; returns (revision before, revision after)."""
    from alembic import command

    engine = make_engine(url)
    try:
        before = current_revision(engine)
        config = alembic_config(url)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
        return before, current_revision(engine)
    finally:
        engine.dispose()


def downgrade(url: str, revision: str) -> tuple[str | None, str | None]:
    from alembic import command

    engine = make_engine(url)
    try:
        before = current_revision(engine)
        config = alembic_config(url)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
        return before, current_revision(engine)
    finally:
        engine.dispose()


def require_head(engine: Engine) -> None:
    """Refuse to work on a database whose schema is not the one this sdc expects."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    where = engine.url.render_as_string(hide_password=True)
    if current is None:
        raise StoreError(f"database {where} has no sdc schema yet: run 'sdc db upgrade'")
    if not _known(current):
        raise StoreError(
            f"database {where} is at schema revision {current}, which this sdc does not know "
            f"(a newer sdc wrote it?); this sdc needs {head}: upgrade sdc, or run 'sdc db upgrade' with the newer one"
        )
    raise StoreError(f"database {where} is at schema revision {current}, this sdc needs {head}: run 'sdc db upgrade'")


def _known(revision: str) -> bool:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    try:
        return script.get_revision(revision) is not None
    except Exception:  # alembic raises its own errors for unknown or ambiguous ids
        return False
