"""Bulk, idempotent writes of records into the store.

Every insert is ``ON CONFLICT DO NOTHING`` on the record id, so replaying a file or the
outbox twice stores each record once. Two kinds describe things that change and are updated
in place: a sweep advances from ``running`` to a final status (never back), and a chip's
host, index and stack follow its newest observation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, fields
from typing import Any, Iterable

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite

from sdc.records import WRITE_ORDER, ProbeResult, Record, canonical_json
from sdc.store.models import ROW_TYPES, ChipRow, SweepRow

CHUNK = 5_000


@dataclass
class WriteResult:
    """How many records of each kind were offered (new or already stored)."""

    offered: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.offered.values())


def record_to_row(record: Record) -> dict[str, Any]:
    row = {f.name: getattr(record, f.name) for f in fields(record)}
    if isinstance(record, ProbeResult):
        row["case_key"] = canonical_json(record.case)
    return row


def _insert(dialect_name: str):
    if dialect_name == "sqlite":
        return sqlite.insert
    if dialect_name == "postgresql":
        return postgresql.insert
    raise NotImplementedError(f"sdc stores evidence in SQLite or PostgreSQL, not {dialect_name}")


def _statement(kind: str, dialect_name: str):
    table = ROW_TYPES[kind].__table__
    stmt = _insert(dialect_name)(table)
    if kind == "sweep":
        # A final status wins over 'running'; a final status is never overwritten.
        return stmt.on_conflict_do_update(
            index_elements=["sweep_id"],
            set_={
                "status": stmt.excluded.status,
                "finished_at": stmt.excluded.finished_at,
                "message": stmt.excluded.message,
            },
            where=(SweepRow.__table__.c.status == "running") & (stmt.excluded.status != "running"),
        )
    if kind == "chip":
        return stmt.on_conflict_do_update(
            index_elements=["chip_id"],
            set_={
                name: getattr(stmt.excluded, name)
                for name in ("host", "index", "vendor", "model", "memory_bytes", "stack", "stack_hash", "observed_at")
            },
            where=stmt.excluded.observed_at > ChipRow.__table__.c.observed_at,
        )
    return stmt.on_conflict_do_nothing(index_elements=[table.primary_key.columns.values()[0].name])


def write_rows(connection: Connection, rows_by_kind: dict[str, list[dict[str, Any]]]) -> WriteResult:
    """Write already-converted rows inside the caller's transaction, parents first."""
    result = WriteResult()
    dialect = connection.dialect.name
    for kind in WRITE_ORDER:
        rows = rows_by_kind.get(kind)
        if not rows:
            continue
        stmt = _statement(kind, dialect)
        for start in range(0, len(rows), CHUNK):
            connection.execute(stmt, rows[start : start + CHUNK])
        result.offered[kind] = len(rows)
    return result


def group_rows(records: Iterable[Record]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        grouped[record.KIND].append(record_to_row(record))
    return grouped


def write_records(engine: Engine, records: Iterable[Record]) -> WriteResult:
    """Write records in one transaction: all of them are stored, or none."""
    grouped = group_rows(records)
    with engine.begin() as connection:
        return write_rows(connection, grouped)


def count_rows(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            kind: connection.execute(select(func.count()).select_from(row.__table__)).scalar_one()
            for kind, row in ROW_TYPES.items()
        }
