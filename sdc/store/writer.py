"""Bulk, idempotent writes of records into the store.

Every insert is ``ON CONFLICT DO NOTHING`` on the record id, so replaying a file or the
outbox twice stores each record once. Two kinds describe things that change and are updated
in place: a sweep advances from ``running`` to a final status (never back), and a chip's
host, index and stack follow its newest observation.

Rows go to the driver as plain tuples, encoded here exactly as the ORM types in
``sdc.store.models`` would (JSON text, UTC times), because per-row ORM/Core bind processing
cost more than the database itself on 100,000-record ingests. PostgreSQL takes large batches
through ``COPY`` into a temporary table and one ``INSERT ... SELECT ... ON CONFLICT``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from operator import attrgetter
from typing import Any, Callable, Iterable

from sqlalchemy import JSON, Connection, Engine, func, select
from sqlalchemy.exc import DBAPIError

from sdc.records import WRITE_ORDER, Record, RecordError, check_record
from sdc.store.engine import deadline, statement_seconds
from sdc.store.models import ROW_TYPES, UTCDateTime

try:
    from orjson import OPT_SORT_KEYS as _SORT_KEYS
    from orjson import dumps as _orjson_dumps
except ImportError:  # pragma: no cover
    _orjson_dumps = None

# Above this many rows of one kind, PostgreSQL gets COPY instead of executemany.
COPY_THRESHOLD = 1_000
UTC = timezone.utc

# Kinds updated in place on conflict; the rest are immutable evidence (DO NOTHING).
_UPSERTS = {
    # A final status wins over 'running'; a final status is never overwritten.
    "sweep": (
        ("status", "finished_at", "message"),
        "sweeps.status = 'running' AND excluded.status <> 'running'",
    ),
    # A chip's attributes follow its newest observation.
    "chip": (
        ("host", "index", "vendor", "model", "memory_bytes", "stack", "stack_hash", "observed_at"),
        "excluded.observed_at > chips.observed_at",
    ),
}


@dataclass
class WriteResult:
    """How many records of each kind were offered (new or already stored)."""

    offered: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.offered.values())


# Prebuilt encoders: json.dumps with non-default options builds a new encoder per call,
# which was a third of the ingest time.
_encode_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_encode_canonical = json.JSONEncoder(separators=(",", ":"), sort_keys=True, allow_nan=False).encode


def _json_text(value: Any) -> str:
    try:
        return _encode_json(value)
    except ValueError:
        raise RecordError("a JSON field holds NaN or infinity, which JSON cannot represent") from None
    except TypeError as exc:
        raise RecordError(f"a JSON field holds a value JSON cannot represent: {exc}") from None


def _canonical_text(value: Any) -> str:
    # Equal to sdc.records.canonical_json for every storable value (a test checks it).
    try:
        return _encode_canonical(value)
    except (ValueError, TypeError) as exc:
        raise RecordError(f"field 'case' cannot be stored as JSON: {exc}") from None


def _fast_json_text(value: Any) -> str:
    try:
        return _orjson_dumps(value).decode()
    except TypeError:  # an integer beyond 64 bits: the standard library keeps every digit
        return _json_text(value)


_case_texts: dict[bytes, str] = {}


def _cached_canonical_text(value: Any) -> str:
    # Sweeps repeat a few cases thousands of times; orjson's sorted bytes are a cheap,
    # exact key for the (slower) canonical text, which must stay the standard library's.
    try:
        key = _orjson_dumps(value, option=_SORT_KEYS)
    except TypeError:  # e.g. an integer beyond 64 bits
        return _canonical_text(value)
    text = _case_texts.get(key)
    if text is None:
        if len(_case_texts) > 100_000:
            _case_texts.clear()
        text = _case_texts[key] = _canonical_text(value)
    return text


def _sqlite_time(value: datetime | None) -> str | None:
    # SQLAlchemy's SQLite DateTime storage format, in UTC (see models.UTCDateTime).
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:-6]  # without its "+00:00"


def _aware_time(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@lru_cache(maxsize=None)
def columns(kind: str) -> tuple[str, ...]:
    """Column names of the kind's table, in table order (the order of encoded tuples)."""
    return tuple(c.name for c in ROW_TYPES[kind].__table__.columns)


@lru_cache(maxsize=None)
def encoder(kind: str, dialect: str, finite: bool = False) -> Callable[[Record], tuple]:
    """``encode(record) -> row tuple`` for one kind and dialect; raises RecordError.

    ``finite=True`` promises every number in the records is finite (true of anything
    decoded from JSON), which allows orjson, several times faster, to write the JSON columns.
    It runs once per ingested line: one C-level attribute fetch, then the few columns that
    need converting.
    """
    table = ROW_TYPES[kind].__table__
    fast = finite and _orjson_dumps is not None
    as_json = _fast_json_text if fast else _json_text
    as_case = _cached_canonical_text if fast else _canonical_text
    as_time = _sqlite_time if dialect == "sqlite" else _aware_time
    names = columns(kind)
    fetch = attrgetter(*(("case" if name == "case_key" else name) for name in names))
    conversions: list[tuple[int, Callable[[Any], Any]]] = []
    case_at = key_at = None
    for i, column in enumerate(table.columns):
        if column.name == "case":
            case_at = i
        elif column.name == "case_key":
            key_at = i
        elif isinstance(column.type, JSON):
            conversions.append((i, as_json))
        elif isinstance(column.type, UTCDateTime):
            conversions.append((i, as_time))

    def encode(record: Record) -> tuple:
        row = list(fetch(record))
        for i, convert in conversions:
            row[i] = convert(row[i])
        if case_at is not None:
            # The canonical text is both the stored JSON value and the cohort key.
            row[case_at] = row[key_at] = as_case(row[case_at])
        return tuple(row)

    return encode


def encode_records(records: Iterable[Record], dialect: str) -> dict[str, list[tuple]]:
    """Row tuples per kind; a record that breaks the string rules of ingest raises RecordError."""
    grouped: dict[str, list[tuple]] = {}
    for record in records:
        check_record(record)
        grouped.setdefault(record.KIND, []).append(encoder(record.KIND, dialect)(record))
    return grouped


@lru_cache(maxsize=None)
def insert_sql(kind: str, dialect: str) -> str:
    table = ROW_TYPES[kind].__table__
    names = columns(kind)
    key = table.primary_key.columns.values()[0].name
    marks = ", ".join(["?" if dialect == "sqlite" else "%s"] * len(names))
    sql = f'INSERT INTO {table.name} ({", ".join(_q(n) for n in names)}) VALUES ({marks}) ON CONFLICT ({_q(key)}) '
    if kind in _UPSERTS:
        updated, where = _UPSERTS[kind]
        sets = ", ".join(f"{_q(n)} = excluded.{_q(n)}" for n in updated)
        return sql + f"DO UPDATE SET {sets} WHERE {where}"
    return sql + "DO NOTHING"


def _q(name: str) -> str:
    return f'"{name}"'


class ConflictError(RecordError):
    """Evidence whose id is already stored (or offered twice) with different content.

    ``conflicts`` lists ``(kind, position in that kind's rows, record id)``; nothing of the
    transaction should be committed.
    """

    def __init__(self, conflicts: list[tuple[str, int, str]]):
        kind, _, record_id = conflicts[0]
        super().__init__(
            f"{len(conflicts)} record(s) already stored with different content, e.g. {kind} {record_id}; "
            "evidence is never overwritten"
        )
        self.conflicts = conflicts


def insert_rows(connection: Connection, rows_by_kind: dict[str, list[tuple]]) -> WriteResult:
    """Write encoded rows inside the caller's transaction, parents first.

    Evidence (every kind but chips and sweeps) is immutable: an id that is already stored, or
    appears twice, must carry the same content, else ``ConflictError`` names the rows.
    """
    result = WriteResult()
    conflicts: list[tuple[str, int, str]] = []
    dialect = connection.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"sdc stores evidence in SQLite or PostgreSQL, not {dialect}")
    dbapi = connection.connection.dbapi_connection
    limit = statement_seconds(connection.engine)
    for kind in WRITE_ORDER:
        rows = rows_by_kind.get(kind)
        if not rows:
            continue
        if kind in _UPSERTS:
            # One lock order for every writer, so concurrent upserts of shared chips queue
            # instead of deadlocking on PostgreSQL.
            rows = sorted(rows, key=lambda row: row[0])
        cursor = dbapi.cursor()
        try:
            with deadline(dbapi, limit and limit + 2.0 * (1 + len(rows) // 10_000)):
                if dialect == "postgresql" and kind not in _UPSERTS and len(rows) >= COPY_THRESHOLD:
                    _copy_insert(cursor, kind, rows)
                else:
                    cursor.executemany(insert_sql(kind, dialect), rows)
                # Every row new (the usual case): nothing to compare. Otherwise some ids were
                # there already, and each must hold exactly what is offered now.
                if kind not in _UPSERTS and 0 <= cursor.rowcount < len(rows):
                    conflicts += [(kind, i, rows[i][0]) for i in _differing(cursor, kind, rows)]
        except connection.dialect.loaded_dbapi.Error as exc:
            # Raw driver calls skip SQLAlchemy's wrapping: wrap here, so callers see the same
            # OperationalError (database gone, locked) or IntegrityError as everywhere else.
            raise DBAPIError.instance(
                insert_sql(kind, dialect), None, exc, connection.dialect.loaded_dbapi.Error,
                connection_invalidated=connection.dialect.is_disconnect(exc, dbapi, cursor),
                dialect=connection.dialect, ismulti=True,
            ) from exc  # fmt: skip
        finally:
            cursor.close()
        result.offered[kind] = result.offered.get(kind, 0) + len(rows)
    if conflicts:
        raise ConflictError(conflicts)
    return result


def _differing(cursor, kind: str, rows: list[tuple]) -> list[int]:
    """Positions of the rows whose stored row (same id) differs from them."""
    table = ROW_TYPES[kind].__table__
    names = columns(kind)
    json_columns = [i for i, n in enumerate(names) if isinstance(table.c[n].type, JSON) or n == "case_key"]
    mark = "?" if cursor.__class__.__module__.startswith("sqlite3") else "%s"
    select_sql = f'SELECT {", ".join(_q(n) for n in names)} FROM {table.name} WHERE {_q(names[0])} IN '
    stored: dict[str, tuple] = {}
    ids = list(dict.fromkeys(row[0] for row in rows))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        cursor.execute(select_sql + f"({', '.join([mark] * len(chunk))})", chunk)
        stored.update((row[0], _comparable(row, json_columns)) for row in cursor.fetchall())
    return [i for i, row in enumerate(rows) if stored.get(row[0]) != _comparable(row, json_columns)]


def _comparable(row, json_columns: list[int]) -> tuple:
    # JSON columns compare as values: the text may differ in spacing or float spelling
    # (and PostgreSQL's driver hands them back decoded). Times compare as instants.
    out = list(row)
    for i in json_columns:
        if isinstance(out[i], str):
            out[i] = json.loads(out[i])
    return tuple(_aware_time(v) if isinstance(v, datetime) else v for v in out)


def _copy_insert(cursor, kind: str, rows: list[tuple]) -> None:
    table = ROW_TYPES[kind].__table__.name
    names = ", ".join(_q(n) for n in columns(kind))
    key = _q(ROW_TYPES[kind].__table__.primary_key.columns.values()[0].name)
    staging = f"sdc_staging_{table}"
    cursor.execute(f"CREATE TEMPORARY TABLE {staging} (LIKE {table}) ON COMMIT DROP")
    with cursor.copy(f"COPY {staging} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    cursor.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {staging} ON CONFLICT ({key}) DO NOTHING")
    cursor.execute(f"DROP TABLE {staging}")


def write_encoded(engine: Engine, rows_by_kind: dict[str, list[tuple]]) -> WriteResult:
    """Write encoded rows in one transaction: all of them are stored, or none."""
    with engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            # Take the write lock now, waiting up to the busy timeout, rather than failing
            # with 'database is locked' when a deferred transaction tries to upgrade.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        return insert_rows(connection, rows_by_kind)


def write_records(engine: Engine, records: Iterable[Record]) -> WriteResult:
    """Write records in one transaction: all of them are stored, or none."""
    return write_encoded(engine, encode_records(records, engine.dialect.name))


def count_rows(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            kind: connection.execute(select(func.count()).select_from(row.__table__)).scalar_one()
            for kind, row in ROW_TYPES.items()
        }
