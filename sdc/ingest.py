"""Ingest JSON-lines files into the store: validate everything first, then write all or nothing."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable

from sqlalchemy import Engine, select

from sdc.records import ProbeResult, Record, RecordError, from_json
from sdc.store.models import ChipRow, SweepRow
from sdc.store.writer import WriteResult, write_records

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


def parse_stream(name: str, stream: BinaryIO, problems: Problems) -> list[Record]:
    records: list[Record] = []
    number = 0
    seen_content = False
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
            return records
        if not line.strip():
            continue
        seen_content = True
        try:
            records.append(from_json(line))
        except RecordError as exc:
            problems.add(f"{name}:{number}", str(exc))
        except UnicodeDecodeError:
            problems.add(f"{name}:{number}", "not UTF-8 text; expected JSON lines")
    if not seen_content:
        problems.add(f"{name}:1", "empty file: no records to ingest")
    return records


def _skip_rest_of_line(stream: BinaryIO) -> int:
    skipped = 0
    while True:
        chunk = stream.readline(MAX_LINE_BYTES)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def read_files(paths: Iterable[str], stdin: BinaryIO | None = None) -> list[Record]:
    """Parse and validate every line of every file; raise IngestError listing what is wrong."""
    problems = Problems()
    records: list[Record] = []
    for path in paths:
        if path == "-":
            records += parse_stream("<stdin>", stdin or sys.stdin.buffer, problems)
            continue
        try:
            with open(path, "rb") as fh:
                records += parse_stream(path, fh, problems)
        except OSError as exc:
            problems.add(path, f"cannot read: {exc.strerror or exc}")
    if problems:
        raise IngestError(problems)
    return records


def check_references(engine: Engine, records: list[Record]) -> None:
    """Each probe result must name a chip and a sweep present in the batch or the store."""
    chips = {r.chip_id for r in records if r.KIND == "chip"}
    sweeps = {r.sweep_id for r in records if r.KIND == "sweep"}
    results = [r for r in records if isinstance(r, ProbeResult)]
    missing_chips = {r.chip_id for r in results} - chips
    missing_sweeps = {r.sweep_id for r in results} - sweeps
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
    records = read_files(paths, stdin)
    check_references(engine, records)
    return write_records(engine, records)


def export_lines(records: Iterable[Record]) -> Iterable[str]:
    for record in records:
        yield record.to_json() + "\n"


def default_export_path(directory: Path) -> Path:
    return directory / "export.jsonl"
