"""Ingest JSON-lines files into the store: validate everything first, then write all or nothing.

Every line is decoded, checked against its record schema and encoded into a database row
before anything is written; any bad line is reported as ``FILE:LINE: what is wrong`` and
nothing is stored. The records are not built as dataclasses on this path: a validated line
goes straight to a row tuple, which is what lets ingest keep up with a raw ``executemany``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterable

from sqlalchemy import Engine, select

from sdc.records import BY_KIND, Record, RecordError, validate_json_dict
from sdc.store.models import ChipRow, SweepRow
from sdc.store.writer import WriteResult, encoder, write_encoded

try:  # orjson decodes several times faster; the standard library is the fallback
    import orjson

    _fast_loads: Callable[[bytes], Any] | None = orjson.loads
except ImportError:  # pragma: no cover
    _fast_loads = None

MAX_LINE_BYTES = 1 << 20  # a probe result is ~1 KB; anything near a megabyte is not ours
MAX_ERRORS = 20


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


@dataclass
class Batch:
    """Validated input: row tuples per kind for ``dialect``, or records when it is None."""

    dialect: str | None
    rows: dict[str, list[Any]] = field(default_factory=dict)
    chips: set[str] = field(default_factory=set)
    sweeps: set[str] = field(default_factory=set)
    cited_chips: set[str] = field(default_factory=set)
    cited_sweeps: set[str] = field(default_factory=set)

    def add(self, kind: str, values: dict[str, Any]) -> None:
        """Encode (which may raise RecordError) and keep one validated line."""
        if self.dialect is None:
            item: Any = BY_KIND[kind](**values)
        else:
            item = encoder(kind, self.dialect, _fast_loads is not None)(values)
        if kind == "probe_result":
            self.cited_chips.add(values["chip_id"])
            self.cited_sweeps.add(values["sweep_id"])
        elif kind == "chip":
            self.chips.add(values["chip_id"])
        elif kind == "sweep":
            self.sweeps.add(values["sweep_id"])
        self.rows.setdefault(kind, []).append(item)

    @property
    def records(self) -> list[Record]:
        assert self.dialect is None, "records are kept only when no dialect is given"
        return [record for items in self.rows.values() for record in items]


def decode(line: bytes) -> Any:
    """One JSON value from one line; RecordError says what is wrong with it."""
    if _fast_loads is not None:
        try:
            return _fast_loads(line)
        except ValueError as exc:
            fast_error = str(exc)
        # The standard library names NaN and Infinity and points at the column; orjson
        # rejects a few more things (lone surrogates, infinite literals) and then says so.
        try:
            _stdlib_loads(line)
        except RecordError:
            raise
        except Exception:
            pass
        raise RecordError(f"not valid JSON: {fast_error}")
    return _stdlib_loads(line)


def _stdlib_loads(line: bytes) -> Any:
    from sdc.records import loads

    return loads(line)


def parse_stream(name: str, stream: BinaryIO, batch: Batch, problems: Problems) -> None:
    number = 0
    seen_content = False
    add = batch.add
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
        if not line.strip():
            continue
        seen_content = True
        try:
            add(*validate_json_dict(decode(line)))
        except RecordError as exc:
            problems.add(f"{name}:{number}", str(exc))
    if not seen_content:
        problems.add(f"{name}:1", "empty file: no records to ingest")


def _skip_rest_of_line(stream: BinaryIO) -> int:
    skipped = 0
    while True:
        chunk = stream.readline(MAX_LINE_BYTES)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def read_files(paths: Iterable[str], dialect: str | None = None, stdin: BinaryIO | None = None) -> Batch:
    """Parse, validate and encode every line of every file; raise IngestError listing problems."""
    problems = Problems()
    batch = Batch(dialect)
    for path in paths:
        if path == "-":
            parse_stream("<stdin>", stdin or sys.stdin.buffer, batch, problems)
            continue
        try:
            with open(path, "rb") as fh:
                parse_stream(path, fh, batch, problems)
        except OSError as exc:
            problems.add(path, f"cannot read: {exc.strerror or exc}")
    if problems:
        raise IngestError(problems)
    return batch


def check_references(engine: Engine, batch: Batch) -> None:
    """Each probe result must name a chip and a sweep present in the batch or the store."""
    missing_chips = batch.cited_chips - batch.chips
    missing_sweeps = batch.cited_sweeps - batch.sweeps
    if missing_chips:
        missing_chips -= _existing(engine, ChipRow.__table__.c.chip_id, missing_chips)
    if missing_sweeps:
        missing_sweeps -= _existing(engine, SweepRow.__table__.c.sweep_id, missing_sweeps)
    problems = Problems()
    for chip_id in sorted(missing_chips):
        problems.add("references", f"probe results name chip '{chip_id}', which is neither in the input nor the store")
    for sweep_id in sorted(missing_sweeps):
        problems.add("references", f"probe results name sweep '{sweep_id}', which is neither in the input nor the store")
    if problems:
        raise IngestError(problems)


def _existing(engine: Engine, column, ids: set[str]) -> set[str]:
    found: set[str] = set()
    wanted = sorted(ids)
    with engine.connect() as connection:
        for start in range(0, len(wanted), 500):
            found.update(connection.execute(select(column).where(column.in_(wanted[start : start + 500]))).scalars())
    return found


def ingest(engine: Engine, paths: Iterable[str], stdin: BinaryIO | None = None) -> WriteResult:
    """Validate all input, then write it in one transaction. Nothing is written on any error."""
    batch = read_files(paths, engine.dialect.name, stdin)
    check_references(engine, batch)
    return write_encoded(engine, batch.rows)


def read_records(paths: Iterable[str], stdin: BinaryIO | None = None) -> list[Record]:
    """Validate all input and return it as records (for the outbox when the database is down)."""
    return read_files(paths, None, stdin).records
