"""A plain (non-editable) wheel install can create and check a database schema.

Builds the wheel from a clean copy of the source, installs it without dependencies into a
fresh virtual environment, and runs that environment's ``sdc``. The dependencies (torch, SQLAlchemy,
...) come from the test environment through a path entry appended *after* the new
environment's own site-packages, so ``sdc`` itself can only come from the wheel (an editable
install's finder lives in a .pth file, which a plain path entry does not run).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from sdc.store.migrate import head_revision

ROOT = Path(__file__).resolve().parents[1]
IGNORED = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")

pytestmark = pytest.mark.slow


def _run(*args, cwd, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(map(str, args)), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{args}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def test_wheel_install_upgrades_a_fresh_database(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    dist = tmp_path / "dist"
    # The test environment's setuptools builds it when recent enough: no index needed, and fast.
    isolation = ["--no-build-isolation"] if _setuptools_at_least(77) else []
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", dist, source, cwd=tmp_path)
    (wheel,) = dist.glob("sdc-*.whl")

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).stdout.strip())
    deps = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    (purelib / "zz_test_dependencies.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel, cwd=tmp_path)

    env = {k: v for k, v in os.environ.items() if not k.startswith("SDC_") and k != "PYTHONPATH"}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    where = _run(python, "-c", "import sdc, sdc.migrations; print(sdc.__file__); print(sdc.migrations.__file__)", cwd=tmp_path, env=env)
    assert all(line.startswith(str(purelib)) for line in where.stdout.split()), where.stdout

    sdc = venv / "bin" / "sdc"
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgraded = _run(sdc, "--db", url, "db", "upgrade", cwd=tmp_path, env=env)
    assert f"upgraded empty -> {head_revision()}" in upgraded.stdout
    current = _run(sdc, "--db", url, "db", "current", cwd=tmp_path, env=env)
    assert "at head" in current.stdout and "NOT" not in current.stdout


def _setuptools_at_least(major: int) -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= major
