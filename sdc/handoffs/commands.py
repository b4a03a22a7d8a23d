"""Running external tools (scontrol, sinfo, kubectl) for the hand-offs, with one clear error type."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Sequence

from sdc.safe_text import quoted, terminal_text


class HandoffError(RuntimeError):
    """An external tool was missing or failed; the message names the command and what it said."""


@dataclass(frozen=True)
class Step:
    """One command a hand-off would run, and why."""

    node: str
    argv: tuple[str, ...]
    why: str

    @property
    def shell(self) -> str:
        """The command as one line for ``sh``: every word quoted, no control character."""
        return " ".join(quoted(word) for word in self.argv)


@dataclass(frozen=True)
class Skip:
    """A node a hand-off leaves alone, and why."""

    node: str
    why: str


def run_tool(argv: Sequence[str], timeout: float = 60.0) -> str:
    """Run a command without a shell; return its stdout or raise HandoffError."""
    if shutil.which(argv[0]) is None:
        raise HandoffError(f"{argv[0]} not found on PATH; run this on a machine with the {argv[0]} client configured")
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise HandoffError(f"{_line(argv)}: no answer after {timeout:.0f} s") from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise HandoffError(f"{_line(argv)} failed (exit {done.returncode}): {terminal_text(said[0][:200]) if said else 'no output'}")
    return done.stdout


def _line(argv: Sequence[str]) -> str:
    """The command for an error message: quoted word by word, no control character."""
    return " ".join(quoted(word) for word in argv)
