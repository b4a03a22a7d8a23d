"""Escaping every data string for the text formats that could interpret it (HTML, Markdown)."""

from __future__ import annotations

import html
import re

# Enough to stop emphasis, code spans, links, tables and strikethrough; every value is placed
# after our own text on its line, so line-start syntax (#, -, 1.) cannot trigger.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
# C0/C1 controls but tab and newline: ESC and BEL in a chip id must not reach a terminal that
# shows the page or the ticket (``sdc report --format markdown`` prints to stdout).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def html_text(value: object) -> str:
    """Text for an HTML element or attribute: &, <, >, " and ' become entities; control
    characters (ESC, BEL) become ``?``."""
    return html.escape(_CONTROL.sub("?", str(value)), quote=True)


def md_text(value: object) -> str:
    """Text for Markdown prose or a table cell: HTML-escaped, Markdown punctuation backslashed.

    Line breaks become spaces so a value can never end a table row or start a block; other
    control characters (ESC, BEL) become ``?``.
    """
    text = _CONTROL.sub("?", " ".join(str(value).split()))
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))
