"""Record strings made harmless on their way out: to a shell, a health checker, a terminal.

Chip ids and host names come from the data (a sweep, an ingested file), so a hostile one may
already sit in the database. Every line sdc builds for another program (NHC's ``die``, which
``eval``s its message; Slurm reasons; Kubernetes annotations; printed plans piped to ``sh``;
commands in reports) keeps only the characters of ``SAFE_CHARS``; a person's terminal never
gets a control character (ESC, BEL, a newline inside a value).

The safe set: ASCII letters and digits and ``. _ : @ + = -``, which covers vendor UUIDs
(``GPU-8f3a...``), PCI addresses and DNS names. A value may not start with ``-`` where it
becomes an argument (it would read as an option).
"""

from __future__ import annotations

import re
import shlex

SAFE_CHARS = "A-Za-z0-9._:@+=-"
_UNSAFE = re.compile(f"[^{SAFE_CHARS}]")
_SAFE_NAME = re.compile(f"[A-Za-z0-9_.:@+=][{SAFE_CHARS}]*")
# C0 and C1 controls and DEL: ESC starts terminal escape sequences, BEL rings, CR rewrites.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
REPLACEMENT = "_"


def is_safe_name(value: str) -> bool:
    """Whether a chip id or host name may be passed to a command as it is."""
    return bool(_SAFE_NAME.fullmatch(value or ""))


def safe_token(value: object) -> str:
    """``value`` with every character outside the safe set replaced by ``_``; never empty,
    never starting with ``-``. For text that another program parses (NHC, Slurm, k8s)."""
    text = _UNSAFE.sub(REPLACEMENT, str(value))
    if text.startswith("-"):
        text = REPLACEMENT + text[1:]
    return text or REPLACEMENT


def quoted(value: object) -> str:
    """One shell word for ``value`` (``shlex.quote``) with no control character in it."""
    return shlex.quote(terminal_text(value))


def terminal_text(value: object) -> str:
    """``value`` for a person's terminal: control characters (ESC, BEL, newlines) become ``?``."""
    return _CONTROL.sub("?", str(value))
