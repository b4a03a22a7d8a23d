"""Ingest JSON-lines files into the store: validate every line and write all or nothing.

Input is streamed: each line is decoded, checked against its record schema and encoded into
a database row, and rows go to the database in bounded batches inside ONE transaction, so
memory does not grow with the file and nothing is committed unless every line is good. Any
bad line is reported as ``FILE:LINE: what is wrong`` (reading goes on, to list them all) and
the transaction is rolled back. The records are not built as dataclasses on this path: a
line is decoded and validated in one msgspec call (``sdc.records.validate_line``) and goes
straight to a row tuple, which is what lets ingest keep up with a raw ``executemany``.

A probe result may come before its chip or sweep in the input: it waits (in memory) until its
parents have been seen, and at the end any whose parents are neither in the input nor the
store are refused. Evidence already stored with other content is refused too.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from sqlalchemy import Connection, Engine, select

from sdc.records import BY_KIND, FUTURE_SKEW, Record, RecordError, as_record, utcnow, validate_line
from sdc.store.models import ChipRow, SweepRow
from sdc.store.writer import ConflictError, WriteResult, encoder, insert_rows


MAX_LINE_BYTES = 1 << 20  # a probe result is ~1 KB; anything near a megabyte is not ours
MAX_ERRORS = 20
BATCH_ROWS = 5_000  # rows handed to the database at a time: bounds memory, not atomicity


@dataclass
class Problems:
    """Every ``FILE:LINE: what is wrong``, kept up to a limit but counted in full."""

    limit: int = MAX_ERRORS
    lines: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, where: str, what: str) -> None:
        self.count += 1
        if len(self.lines) < self.limit:
            self.lines.append(f"{where}: {what}")

    def __bool__(self) -> bool:
        return self.count > 0

    def render(self) -> str:
        more = f"\n... and {self.count - len(self.lines)} more" if self.count > len(self.lines) else ""
        return "\n".join(self.lines) + more


class IngestError(Exception):
    def __init__(self, problems: Problems):
        super().__init__(problems.render())
        self.problems = problems


def may_hold_control(line: bytes) -> bool:
    """False when no string in this JSON text can hold a control character.

    JSON text carries C0 controls only as escapes (a backslash), DEL raw, and C1 controls
    as the UTF-8 lead byte 0xC2: a line with none of them needs no look inside its objects.
    """
    return b"\\" in line or b"\x7f" in line or b"\xc2" in line


def iter_lines(paths: Iterable[str], problems: Problems, stdin: BinaryIO | None = None, tee: BinaryIO | None = None) -> Iterator[tuple[str, bytes]]:
    """``(FILE:LINE, line)`` for every non-blank line; unreadable input goes to ``problems``.

    Args:
        tee: a file that receives a copy of standard input as it is read (so input piped
            in can still be spooled if the database fails half-way).
    """
    for path in paths:
        if path == "-":
            source = stdin if stdin is not None else _stdin()
            if source is None:
                problems.add("<stdin>", "standard input is closed: pipe records in, or name files to read")
                continue
            yield from _stream_lines("<stdin>", source, problems, tee)
            continue
        try:
            with open(path, "rb") as fh:
                yield from _stream_lines(path, fh, problems, None)
        except OSError as exc:
            problems.add(path, f"cannot read: {exc.strerror or exc}")


def _stdin() -> BinaryIO | None:
    stream = sys.stdin
    buffer = getattr(stream, "buffer", None) if stream is not None else None
    if buffer is None or stream.closed:
        return None
    return buffer


def _stream_lines(name: str, stream: BinaryIO, problems: Problems, tee: BinaryIO | None) -> Iterator[tuple[str, bytes]]:
    number = 0
    seen_content = False
    try:
        while True:
            line = stream.readline(MAX_LINE_BYTES + 1)
            if not line:
                break
            number += 1
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                size = len(line) + _skip_rest_of_line(stream)
                problems.add(f"{name}:{number}", f"line is {size:,} bytes, over the {MAX_LINE_BYTES:,}-byte limit")
                seen_content = True
                continue
            if b"\0" in line:
                problems.add(f"{name}:{number}", "binary data (NUL byte); expected JSON lines text")
                return
            if tee is not None:
                tee.write(line if line.endswith(b"\n") else line + b"\n")
            if not line.strip():
                continue
            seen_content = True
            yield f"{name}:{number}", line
    except (OSError, ValueError) as exc:  # a closed or failing descriptor
        problems.add(f"{name}:{number + 1}", f"cannot read: {getattr(exc, 'strerror', None) or exc}")
        return
    if not seen_content:
        problems.add(f"{name}:1", "empty file: no records to ingest")


def _skip_rest_of_line(stream: BinaryIO) -> int:
    skipped = 0
    while True:
        chunk = stream.readline(MAX_LINE_BYTES)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def iter_valid(paths: Iterable[str], problems: Problems, stdin: BinaryIO | None = None, tee: BinaryIO | None = None) -> Iterator[tuple[str, Any]]:
    """``(FILE:LINE, fields)`` of every valid line (``sdc.records.validate_line``); the others go to ``problems``."""
    not_after = utcnow() + FUTURE_SKEW
    for where, line in iter_lines(paths, problems, stdin, tee):
        try:
            record = validate_line(line, may_hold_control(line), not_after)
        except RecordError as exc:
            problems.add(where, str(exc))
            continue
        yield where, record


@dataclass
class _Parents:
    """Which chips and sweeps exist (in this input or the store), asked of the store once each."""

    connection: Connection
    chips: set[str] = field(default_factory=set)
    sweeps: set[str] = field(default_factory=set)
    asked_chips: set[str] = field(default_factory=set)
    asked_sweeps: set[str] = field(default_factory=set)

    def has(self, record: Record) -> bool:
        if record.KIND == "probe_result":
            return self._known_chip(record.chip_id) and self._known_sweep(record.sweep_id)
        if record.KIND == "quarantine_event":  # a transition of a chip nobody has seen is not evidence
            return self._known_chip(record.chip_id)
        return True

    def _known_chip(self, chip_id: str) -> bool:
        if chip_id not in self.chips and chip_id not in self.asked_chips:
            self.asked_chips.add(chip_id)
            if _exists(self.connection, ChipRow.__table__.c.chip_id, chip_id):
                self.chips.add(chip_id)
        return chip_id in self.chips

    def _known_sweep(self, sweep_id: str) -> bool:
        if sweep_id not in self.sweeps and sweep_id not in self.asked_sweeps:
            self.asked_sweeps.add(sweep_id)
            if _exists(self.connection, SweepRow.__table__.c.sweep_id, sweep_id):
                self.sweeps.add(sweep_id)
        return sweep_id in self.sweeps


def _exists(connection: Connection, column, value: str) -> bool:
    return connection.execute(select(column).where(column == value)).first() is not None


@dataclass
class _Batch:
    """Encoded rows waiting to be written, with the FILE:LINE each came from."""

    rows: dict[str, list[tuple]] = field(default_factory=dict)
    where: dict[str, list[str]] = field(default_factory=dict)
    size: int = 0

    def add(self, kind: str, row: tuple, where: str) -> None:
        self.rows.setdefault(kind, []).append(row)
        self.where.setdefault(kind, []).append(where)
        self.size += 1


def ingest(engine: Engine, paths: Iterable[str], stdin: BinaryIO | None = None, tee: BinaryIO | None = None) -> WriteResult:
    """Validate and store all input in one transaction; nothing is written on any error.

    Raises IngestError listing every problem (bad lines, missing parents, conflicting
    duplicates). A failure of the database itself (it went away) propagates as raised.

    Args:
        tee: receives a copy of standard input as read (see ``iter_lines``).
    """
    problems = Problems()
    dialect = engine.dialect.name
    finite = True  # numbers decoded from JSON are finite
    result = WriteResult()
    with engine.begin() as connection:
        if dialect == "sqlite":
            # Take the write lock now, waiting up to the busy timeout, rather than failing
            # with 'database is locked' when a deferred transaction tries to upgrade.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        parents = _Parents(connection)
        batch = _Batch()
        waiting: list[tuple[Record, tuple, str]] = []  # rows whose parents come later
        for where, record in iter_valid(paths, problems, stdin, tee):
            kind = record.KIND
            try:
                row = encoder(kind, dialect, finite)(record)
            except RecordError as exc:
                problems.add(where, str(exc))
                continue
            if problems:
                continue  # nothing will be committed; keep reading only to list every problem
            if kind == "chip":
                parents.chips.add(record.chip_id)
            elif kind == "sweep":
                parents.sweeps.add(record.sweep_id)
            if parents.has(record):
                batch.add(kind, row, where)
            else:
                waiting.append((record, row, where))
            if batch.size >= BATCH_ROWS:
                _write(connection, batch, result, problems)
                batch = _Batch()
        if not problems:
            for record, row, where in waiting:
                if parents.has(record):
                    batch.add(record.KIND, row, where)
                else:
                    _missing_parent(problems, where, record, parents)
        if not problems:
            _write(connection, batch, result, problems)
        if problems:
            raise IngestError(problems)  # leaving the block rolls the transaction back
    return result


def _missing_parent(problems: Problems, where: str, record: Record, parents: _Parents) -> None:
    if record.chip_id not in parents.chips:
        problems.add(where, f"{record.KIND} names chip '{record.chip_id}', which is neither in the input nor the store")
    else:
        problems.add(where, f"{record.KIND} names sweep '{record.sweep_id}', which is neither in the input nor the store")


def _write(connection: Connection, batch: _Batch, result: WriteResult, problems: Problems) -> None:
    if not batch.size:
        return
    try:
        written = insert_rows(connection, batch.rows)
    except ConflictError as exc:
        for kind, position, record_id in exc.conflicts:
            problems.add(
                batch.where[kind][position],
                f"{BY_KIND[kind].ID_FIELD} {record_id} is already stored (or given earlier) with different content; "
                "evidence is never overwritten",
            )
        return
    for kind, n in written.offered.items():
        result.offered[kind] = result.offered.get(kind, 0) + n


def iter_input_records(paths: Iterable[str], problems: Problems, stdin: BinaryIO | None = None) -> Iterator[Record]:
    """Every valid line as a record (bad ones go to ``problems``): what the outbox spools."""
    for _, fields in iter_valid(paths, problems, stdin):
        yield as_record(fields)


def read_records(paths: Iterable[str], stdin: BinaryIO | None = None) -> list[Record]:
    """Validate all input and return it as records; raises IngestError listing problems."""
    problems = Problems()
    records = list(iter_input_records(paths, problems, stdin))
    if problems:
        raise IngestError(problems)
    return records


@dataclass(frozen=True)
class ValidInput:
    records: list[Record]


def read_files(paths: Iterable[str], stdin: BinaryIO | None = None) -> ValidInput:
    """Validate all input without a database (``.records``); raises IngestError listing problems."""
    return ValidInput(read_records(paths, stdin))
