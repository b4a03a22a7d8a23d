"""The outbox: a local spool for records the database could not take right now.

Each spooled batch is one JSON-lines file, written to a temporary name, fsync'd, then
atomically renamed, and the directory fsync'd: after a crash a batch is either fully there or
absent, never half-written. Replay ingests each file (idempotent by record id) and only then
removes it, so a crash during replay stores nothing twice and loses nothing.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from sdc.records import Record, RecordError, from_json

SUFFIX = ".jsonl"


@dataclass(frozen=True)
class SpoolFile:
    path: Path
    records: int


class Outbox:
    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def spool(self, records: Sequence[Record]) -> SpoolFile:
        """Durably store records for later delivery; returns the file written."""
        self.directory.mkdir(parents=True, exist_ok=True)
        # Time-ordered names replay oldest first; host and random parts avoid collisions
        # between processes sharing one spool directory.
        name = f"{time.time_ns():020d}-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        final = self.directory / f"{name}{SUFFIX}"
        tmp = self.directory / f".{name}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            for record in records:
                fh.write(record.to_json())
                fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.directory)
        return SpoolFile(final, len(records))

    def pending(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))

    def pending_records(self) -> int:
        return sum(_count_lines(p) for p in self.pending())

    def replay(self, write: Callable[[list[Record]], object]) -> int:
        """Deliver every spooled file through ``write``; returns records delivered.

        A file that cannot be parsed is moved aside to ``*.bad`` (kept for a person to read)
        instead of blocking the queue forever.
        """
        delivered = 0
        for path in self.pending():
            try:
                records = _read(path)
            except FileNotFoundError:
                continue  # another process replayed it first
            except RecordError:
                os.replace(path, path.with_suffix(".bad"))
                continue
            write(records)  # raises if the database went away again: the file stays
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            delivered += len(records)
        if delivered:
            _fsync_dir(self.directory)
        return delivered


def _read(path: Path) -> list[Record]:
    records = []
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    records.append(from_json(line))
                except RecordError as exc:
                    raise RecordError(f"{path}:{number}: {exc}") from None
    return records


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    except FileNotFoundError:
        return 0


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_spooled(outbox: Outbox) -> Iterable[Record]:
    for path in outbox.pending():
        yield from _read(path)
