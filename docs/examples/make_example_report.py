"""Regenerate docs/examples/report.html from the example fleet of tests/fleets.py.

Run from the repository root: .venv/bin/python docs/examples/make_example_report.py
"""

import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sdc.reports import build_report, render  # noqa: E402
from sdc.store import Store  # noqa: E402
from sdc.store.migrate import upgrade  # noqa: E402
from tests.fleets import example_fleet  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    url = f"sqlite:///{tmp}/example.db"
    upgrade(url)
    store = Store(url)
    store.write(example_fleet())
    report = build_report(store.engine(), source="postgresql://sdc@db.example:5432/sdc", now=datetime(2026, 11, 7, 8, 0, tzinfo=timezone.utc))
    store.dispose()
out = ROOT / "docs" / "examples" / "report.html"
out.write_text(render(report, "html"))
print(out)
