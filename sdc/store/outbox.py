"""The outbox: a local spool for records the database could not take right now.

Each spooled batch is one JSON-lines file, written to a temporary name, fsync'd, then
atomically renamed, and the directory fsync'd: after a crash a batch is either fully there or
absent, never half-written (a temporary file left by a killed process is removed by the next
one). Replay ingests each file (idempotent by record id) and only then removes it, so a crash
during replay stores nothing twice and loses nothing.

Files are named by a sequence number kept in the outbox itself, not by the wall clock: a
clock stepped back must not replay results before the chips they name.
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
from typing import Callable, Iterable, Iterator

from sqlalchemy.exc import DataError, IntegrityError

from sdc.files import atomic_write, fsync_dir
from sdc.records import Record, RecordError, from_json
from sdc.store.sweeps import process_alive

SUFFIX = ".jsonl"
SEQUENCE_FILE = ".sequence"
# New names start with 'q' so they sort after the time_ns names older sdc versions wrote.
PREFIX = "q"
STALE_TEMP_SECONDS = 3600
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpoolFile:
    path: Path
    records: int


class Outbox:
    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def spool(self, records: Iterable[Record]) -> SpoolFile:
        """Durably store records for later delivery; returns the file written.

        Raises OSError when the outbox cannot keep them (full disk, a file where the
        directory should be); nothing half-written is left behind.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.directory)
        # Host and random parts avoid collisions between hosts sharing one spool directory.
        name = f"{PREFIX}{self._next_sequence():016d}-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        count = 0

        def lines() -> Iterator[str]:
            nonlocal count
            for record in records:
                count += 1
                yield record.to_json() + "\n"

        final = atomic_write(self.directory / f"{name}{SUFFIX}", lines())
        return SpoolFile(final, count)

    def _next_sequence(self) -> int:
        """The next number of this outbox, under an exclusive lock (processes share outboxes)."""
        fd = os.open(self.directory / SEQUENCE_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            current = int(text) if text.isdigit() else self._highest_spooled()
            os.pwrite(fd, f"{current + 1:020d}\n".encode(), 0)
            os.fsync(fd)
            return current + 1
        finally:
            os.close(fd)  # closing drops the flock

    def _highest_spooled(self) -> int:
        # A lost sequence file restarts above every file still waiting, never below.
        numbers = [int(p.name[1:17]) for p in self.pending() if p.name.startswith(PREFIX) and p.name[1:17].isdigit()]
        return max(numbers, default=0)

    def pending(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))

    def pending_records(self) -> int:
        return sum(_count_lines(p) for p in self.pending())

    def replay(self, write: Callable[[list[Record]], object], transient: Callable[[BaseException], bool]) -> int:
        """Deliver every spooled file through ``write``; returns records delivered.

        A transient failure (``transient(exc)``: the database went away again) stops the
        replay and leaves the file for next time. A file the database refuses is retried
        after the others (its chips or sweep may be in a later file); one still refused when
        no other file goes in, or that cannot be parsed, is moved aside to ``*.bad`` (kept
        for a person to read) instead of blocking the queue forever. One process replays at
        a time; the others skip, so a record is not written twice by racing replays.
        """
        if not self.directory.is_dir():
            return 0
        with _replay_lock(self.directory) as locked:
            if not locked:
                return 0
            remove_stale_temporaries(self.directory)
            delivered = 0
            queue = self.pending()
            while queue:
                refused: list[tuple[Path, Exception]] = []
                for path in queue:
                    try:
                        records = _read(path)
                        write(records)
                    except FileNotFoundError:
                        continue  # removed by hand meanwhile
                    except Exception as exc:
                        if isinstance(exc, RecordError):  # unreadable, or conflicts with stored evidence
                            _set_aside(path, exc)
                        elif not transient(exc) and isinstance(exc, (IntegrityError, DataError)):
                            refused.append((path, exc))
                        else:  # gone again, or broken (a damaged database): not the file's fault
                            raise
                        continue
                    path.unlink()
                    delivered += len(records)
                if len(refused) == len(queue):  # no progress: these will not go in
                    for path, exc in refused:
                        _set_aside(path, exc)
                    break
                queue = [path for path, _ in refused]
            if delivered:
                fsync_dir(self.directory)
            return delivered

    def set_aside(self) -> list[Path]:
        """Spool files that could not be stored and were moved aside (``*.bad``)."""
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("*.bad"))


def _set_aside(path: Path, exc: BaseException) -> None:
    log.error("outbox: %s cannot be stored (%s); moved aside to %s", path, exc, path.with_suffix(".bad"))
    os.replace(path, path.with_suffix(".bad"))


def remove_stale_temporaries(directory: Path, max_age_s: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove temporary spool files whose writer is gone (killed mid-spool); returns them.

    ``atomic_write`` names them ``.NAME.PID.RANDOM.tmp``: a file whose process no longer
    exists, or older than ``max_age_s`` (the pid may have been reused), was never finished.
    """
    removed = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    now = time.time()
    for path in entries:
        if not (path.name.startswith(".") and path.name.endswith(".tmp")):
            continue
        parts = path.name.split(".")
        pid = int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None
        try:
            old = now - path.stat().st_mtime > max_age_s
        except FileNotFoundError:
            continue
        if old or (pid is not None and pid != os.getpid() and not process_alive(pid)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed




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
