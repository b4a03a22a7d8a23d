"""A plain (non-editable) wheel install can create and check a database schema, and carries
the CPU digest kernel built at install time (not compiled at first use).

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
IGNORED = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "*.so")

pytestmark = pytest.mark.slow


def _run(*args, cwd, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(map(str, args)), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{args}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def _install_wheel(tmp_path: Path, build_env: dict | None = None) -> tuple[Path, Path]:
    """Build the wheel from a clean copy of the source and install it into a fresh venv: (venv, purelib)."""
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    dist = tmp_path / "dist"
    # The test environment's setuptools builds it when recent enough: no index needed, and fast.
    isolation = ["--no-build-isolation"] if _setuptools_at_least(77) else []
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", dist, source, cwd=tmp_path, env=build_env)
    (wheel,) = dist.glob("sdc-*.whl")

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).stdout.strip())
    deps = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    (purelib / "zz_test_dependencies.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel, cwd=tmp_path)
    return venv, purelib


def _clean_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDC_") and k != "PYTHONPATH"}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    return env


def test_wheel_install_upgrades_a_fresh_database(tmp_path):
    venv, purelib = _install_wheel(tmp_path)
    python = venv / "bin" / "python"
    env = _clean_env(tmp_path)
    where = _run(python, "-c", "import sdc, sdc.migrations; print(sdc.__file__); print(sdc.migrations.__file__)", cwd=tmp_path, env=env)
    assert all(line.startswith(str(purelib)) for line in where.stdout.split()), where.stdout

    sdc = venv / "bin" / "sdc"
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgraded = _run(sdc, "--db", url, "db", "upgrade", cwd=tmp_path, env=env)
    assert f"upgraded empty -> {head_revision()}" in upgraded.stdout
    current = _run(sdc, "--db", url, "db", "current", cwd=tmp_path, env=env)
    assert "at head" in current.stdout and "NOT" not in current.stdout

    # The digest kernel came built in the wheel: it loads from the install, and a digest
    # writes nothing into the user's cache directory.
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    kernel = _run(python, "-c", "import torch; from sdc.digest import native, digest; digest(torch.arange(1 << 21)); "
                  "print(native.available()); print(native.library_path())", cwd=tmp_path, env=env)
    available, path = kernel.stdout.split()
    assert available == "True" and path.startswith(str(purelib)), kernel.stdout
    assert not (tmp_path / "cache").exists()


def test_without_a_compiler_the_wheel_installs_and_digests_take_the_eager_path(tmp_path):
    build_env = {**os.environ, "CC": "/bin/false", "LDSHARED": "/bin/false"}
    venv, purelib = _install_wheel(tmp_path, build_env)
    check = (
        "import torch; from sdc.digest import native, digest_sums, eager_digest_sums; t = torch.randn(1 << 21); "
        "print(native.available(), native.library_path(), "
        "[int(v) for v in digest_sums(t)] == [int(v) for v in eager_digest_sums(t)])"
    )
    out = _run(venv / "bin" / "python", "-c", check, cwd=tmp_path, env=_clean_env(tmp_path)).stdout.split()
    assert out == ["False", "None", "True"]


def _setuptools_at_least(major: int) -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= major
