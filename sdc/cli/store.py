"""``sdc db``, ``sdc ingest``, ``sdc export`` (JSON lines) and ``sdc flush``."""

from __future__ import annotations

import shutil
import sys
import tempfile
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Iterator

import click
from sqlalchemy.exc import OperationalError

from sdc.cli.context import AppContext, fail, handles_errors, pass_app
from sdc.cli.lazy import LazyGroup
from sdc.config import safe_url
from sdc.exitcodes import ExitCode
from sdc.records import BY_KIND, parse_time
from sdc.store import Delivery, Store, migrate, short_reason, unreachable
from sdc.store.ingest import IngestError, Problems, ingest, iter_input_records
from sdc.store.reader import iter_records


@click.group("db")
def db_group() -> None:
    """Create and upgrade the evidence database schema."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
@pass_app
@handles_errors
def db_upgrade(app: AppContext, revision: str) -> None:
    """Bring the database schema up to REVISION (default: head)."""
    before, after = migrate.upgrade(app.settings.database_url, revision)
    where = safe_url(app.settings.database_url)
    if before == after:
        click.echo(f"{where}: already at {after}")
    else:
        click.echo(f"{where}: upgraded {before or 'empty'} -> {after}")


@db_group.command("downgrade")
@click.argument("revision")
@pass_app
@handles_errors
def db_downgrade(app: AppContext, revision: str) -> None:
    """Take the schema back to REVISION ('base' drops every sdc table)."""
    before, after = migrate.downgrade(app.settings.database_url, revision)
    click.echo(f"{safe_url(app.settings.database_url)}: downgraded {before} -> {after or 'base'}")


@db_group.command("current")
@pass_app
@handles_errors
def db_current(app: AppContext) -> None:
    """Show the schema revision of the database and the one this sdc needs."""
    from sdc.store.engine import make_engine

    engine = make_engine(app.settings.database_url)
    try:
        current = migrate.current_revision(engine)
    finally:
        engine.dispose()
    head = migrate.head_revision()
    if app.json_output:
        app.emit_json({"current": current, "head": head, "at_head": current == head})
    else:
        state = "at head" if current == head else "NOT at head: run 'sdc db upgrade'"
        click.echo(f"{safe_url(app.settings.database_url)}: {current or 'empty'} (head {head}, {state})")
    sys.exit(int(ExitCode.HEALTHY if current == head else ExitCode.UNKNOWN))


@db_group.command("revision")
@click.option("-m", "--message", required=True, help="What the schema change does (becomes the file name).")
@pass_app
@handles_errors
def db_revision(app: AppContext, message: str) -> None:
    """For developers: autogenerate a migration from sdc/store/models.py.

    Compares the models with the database given by --db (which must be at head; a scratch
    SQLite file is fine) and writes migrations/versions/NNNN_<message>.py. Review it.
    """
    path = migrate.revision(app.settings.database_url, message)
    click.echo(f"wrote {path}; review it, then 'sdc db upgrade'")


@click.command("ingest")
@click.argument("files", nargs=-1, required=True)
@pass_app
@handles_errors
def ingest_command(app: AppContext, files: tuple[str, ...]) -> None:
    """Validate FILES (JSON lines; '-' for stdin) and store every record, or none on any error.

    If the database cannot be reached, or fails during the write, the validated records go
    to the outbox instead and 'sdc flush' (or any later successful write) delivers them.
    """
    store = app.store()
    try:
        try:
            engine = store.engine()
        except OperationalError as exc:  # unreachable; a schema not at head still refuses
            _spool_input(app, store, files, exc)
            return
        # Earlier spooled records first: the new input may refer to chips and sweeps in them.
        replayed = _replay_quietly(store)
        with _stdin_copy(app, files) as tee:
            try:
                result = ingest(engine, files, tee=tee)
            except Exception as exc:
                if not unreachable(exc):
                    raise
                # The database went away during the write: nothing was committed, and the
                # input (stdin included, from its copy) goes to the outbox instead.
                if tee is not None:
                    tee.flush()
                    _drain_stdin(tee)
                readable = [tee.name if f == "-" and tee is not None else f for f in files]
                _spool_input(app, store, tuple(readable), exc)
                return
    except IngestError as exc:
        click.echo(str(exc), err=True)
        fail(f"ingest: {exc.problems.count} problem(s); nothing was written", ExitCode.UNKNOWN)
    if app.json_output:
        app.emit_json({"ingested": result.offered, "total": result.total, "replayed_from_outbox": replayed})
    else:
        parts = ", ".join(f"{n} {kind}" for kind, n in result.offered.items())
        click.echo(f"ingested {result.total} records ({parts}); records already stored were left as they were")
        if replayed:
            click.echo(f"also delivered {replayed} records waiting in the outbox {app.settings.outbox_dir}")


@contextmanager
def _stdin_copy(app: AppContext, files: tuple[str, ...]) -> Iterator[BinaryIO | None]:
    """A private copy of standard input as it is read, so piped records survive a failed write."""
    if "-" not in files:
        yield None
        return
    directory = Path(app.settings.data_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(prefix=".stdin-", suffix=".tmp", dir=directory, delete=False)
    except OSError:  # nowhere to keep a copy: ingest still works, it just cannot spool stdin
        yield None
        return
    try:
        with handle:
            yield handle
    finally:
        Path(handle.name).unlink(missing_ok=True)


def _drain_stdin(tee: BinaryIO) -> None:
    # The write may fail before all of stdin was read: copy the rest too.
    from sdc.store.ingest import _stdin

    source = _stdin()
    if source is not None:
        shutil.copyfileobj(source, tee)
        tee.flush()


def _spool_input(app: AppContext, store: Store, files: tuple[str, ...], exc: Exception) -> None:
    problems = Problems()
    records = iter_input_records(files, problems)  # validated as spooled: the outbox takes only good records
    reason = short_reason(exc)

    def checked():
        yield from records
        if problems:
            raise IngestError(problems)  # before the rename: no spool file is left

    try:
        spool = store.outbox.spool(checked())
    except OSError as spool_exc:
        fail(
            f"database unavailable ({reason}) and the outbox cannot keep the input "
            f"({store.outbox.directory}: {spool_exc.strerror or spool_exc}); nothing was kept: "
            "free space or fix the outbox directory (SDC_OUTBOX_DIR), then ingest again"
        )
    delivery = Delivery(spooled=spool.records, spool_path=spool.path, reason=reason)
    if app.json_output:
        app.emit_json({"ingested": {}, "total": 0, "spooled": spool.records, "outbox": str(spool.path)})
    click.echo(f"sdc: {delivery.message}", err=True)


def _replay_quietly(store: Store) -> int:
    """Deliver what earlier runs left in the outbox; a failure here loses nothing."""
    try:
        return store.flush()
    except Exception as exc:
        if not unreachable(exc):
            raise
        return 0


@click.group(
    "export",
    cls=LazyGroup,
    invoke_without_command=True,
    lazy_commands={
        "slurm": "sdc.cli.ops:export_slurm",
        "k8s": "sdc.cli.ops:export_k8s",
        "prometheus": "sdc.cli.ops:export_prometheus",
    },
)
@click.option("--kind", "kinds", multiple=True, type=click.Choice(sorted(BY_KIND)), help="Record kinds (repeatable; default all).")
@click.option("--since", help="Only records at or after this ISO 8601 time.")
@click.option("--chip", "chips", multiple=True, help="Only the records about this chip (repeatable): it, its results and their sweeps, its verdicts and events.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="File to write (default stdout).")
@click.pass_context
@handles_errors
def export_command(ctx: click.Context, kinds: tuple[str, ...], since: str | None, chips: tuple[str, ...], output: str | None) -> None:
    """Write stored records as JSON lines that 'sdc ingest' reads back.

    With a subcommand (slurm, k8s, prometheus), hand the quarantine list to that system instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    app = ctx.find_object(AppContext) or ctx.ensure_object(AppContext)
    since_at: datetime | None = None
    if since:
        try:
            since_at = parse_time(since)
        except ValueError:
            fail(f"export: --since {since!r} is not an ISO 8601 time such as 2026-11-01 or 2026-11-01T12:00Z")
    engine = app.store().engine()
    stream = open(output, "w", encoding="utf-8") if output else sys.stdout
    count = 0
    try:
        for record in iter_records(engine, kinds or tuple(BY_KIND), since_at, chip_ids=list(chips) or None):
            stream.write(record.to_json())
            stream.write("\n")
            count += 1
    finally:
        if output:
            stream.close()
    if output:
        click.echo(f"exported {count} records to {output}", err=True)


@click.command("flush")
@pass_app
@handles_errors
def flush_command(app: AppContext) -> None:
    """Deliver records spooled in the outbox while the database was unreachable."""
    store = app.store()
    pending = store.outbox.pending_records() if store.outbox else 0
    if pending:
        delivered = store.flush()
        click.echo(f"delivered {delivered} of {pending} spooled records from {app.settings.outbox_dir}")
    else:
        click.echo(f"outbox {app.settings.outbox_dir} is empty")
    set_aside = store.outbox.set_aside() if store.outbox else []
    if set_aside:
        click.echo(
            f"sdc: {len(set_aside)} spool file(s) the database refused are kept as *.bad in "
            f"{app.settings.outbox_dir}; read them, fix or delete them",
            err=True,
        )
        sys.exit(int(ExitCode.UNKNOWN))
