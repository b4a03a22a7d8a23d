"""Files written whole or not at all: a temporary file in the same directory, fsync'd, renamed
over the target, and the directory fsync'd, so a crash (or a reader such as node_exporter)
sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterable


def atomic_write(path: str | os.PathLike, content: str | Iterable[str], mode: int | None = None) -> Path:
    """Write ``content`` (text, or text chunks) to ``path`` atomically; returns the path.

    Args:
        mode: permission bits of the new file (e.g. 0o644 for a file another user's daemon
            reads, whatever the umask); default: what the umask gives.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for chunk in [content] if isinstance(content, str) else content:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename inside ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
