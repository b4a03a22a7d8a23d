"""The layers of the data flow hold (import-linter contracts in pyproject.toml), and the light
entry points stay light: ``import sdc`` and ``sdc check``'s modules pull in no torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_are_kept():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        pytest.fail("import-linter is not installed; it is in the 'test' extra (pip install -e '.[test]')")
    run = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


@pytest.mark.parametrize("module", ["sdc", "sdc.cli", "sdc.handoffs.check", "sdc.quarantine", "sdc.records"])
def test_light_entry_points_import_no_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    torch_loaded, _numpy = out.stdout.split()
    assert torch_loaded == "False", f"importing {module} imports torch"
