"""The outbox: a local spool for records the database could not take right now.

Each spooled batch is one JSON-lines file, written to a temporary name, fsync'd, then
atomically renamed, and the directory fsync'd: after a crash a batch is either fully there or
absent, never half-written. Replay ingests each file (idempotent by record id) and only then
removes it, so a crash during replay stores nothing twice and loses nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from sdc.files import atomic_write, fsync_dir
from sdc.records import Record, RecordError, from_json

SUFFIX = ".jsonl"
log = logging.getLogger(__name__)


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
        final = atomic_write(self.directory / f"{name}{SUFFIX}", (record.to_json() + "\n" for record in records))
        return SpoolFile(final, len(records))

    def pending(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))

    def pending_records(self) -> int:
        return sum(_count_lines(p) for p in self.pending())

    def replay(self, write: Callable[[list[Record]], object], transient: Callable[[BaseException], bool]) -> int:
        """Deliver every spooled file through ``write``; returns records delivered.

        A transient failure (``transient(exc)``: the database went away again) stops the
        replay and leaves the file for next time. A file the database refuses for good, or
        that cannot be parsed, is moved aside to ``*.bad`` (kept for a person to read)
        instead of blocking the queue forever. One process replays at a time; the others
        skip, so a record is not written twice by racing replays.
        """
        if not self.directory.is_dir():
            return 0
        with _replay_lock(self.directory) as locked:
            if not locked:
                return 0
            delivered = 0
            for path in self.pending():
                try:
                    records = _read(path)
                    write(records)
                except FileNotFoundError:
                    continue  # removed by hand meanwhile
                except Exception as exc:
                    if not isinstance(exc, RecordError) and transient(exc):
                        raise
                    log.error("outbox: %s cannot be stored (%s); moved aside to %s", path, exc, path.with_suffix(".bad"))
                    os.replace(path, path.with_suffix(".bad"))
                    continue
                path.unlink()
                delivered += len(records)
            if delivered:
                fsync_dir(self.directory)
            return delivered

    def set_aside(self) -> list[Path]:
        """Spool files that could not be stored and were moved aside (``*.bad``)."""
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("*.bad"))


@contextlib.contextmanager
def _replay_lock(directory: Path) -> Iterator[bool]:
    # flock, not a lock file's existence: the kernel drops it when a replaying process dies.
    fd = os.open(directory / ".replay.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


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
