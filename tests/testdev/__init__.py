"""sdc's test accelerator: a PrivateUse1 backend named ``testdev`` with two devices.

Importing ``tests.testdev.backend`` does what a vendor plug-in (``torch_npu``, ``torch_mlu`` ...)
does: load the backend's C++ library (here built from ``testdev.cpp`` with
``torch.utils.cpp_extension``, once per CI run, cached in ``build/testdev-torch<version>/`` or
``$SDC_TESTDEV_BUILD_DIR``), rename PrivateUse1 to ``testdev`` and register ``torch.testdev``.
Sweeps load it like any plug-in: ``sdc sweep --backend-module tests.testdev.backend``.
Tests call ``load_or_skip()``: where no compiler exists they are skipped with the reason.

Device memory is host memory capped at ``$SDC_TESTDEV_MEMORY_MIB`` (2048) per device; every op
but the few the backend owns runs through the CPU fallback (after ``$SDC_TESTDEV_DELAY_US``
microseconds, 0 by default, to emulate a slower chip), so the device is slow and lacks
what young backends lack (Inductor, Triton, a c10d backend, float64 ``abs``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

NAME = "testdev"
MODULE = "tests.testdev.backend"
SOURCE = Path(__file__).with_name("testdev.cpp")
REPOSITORY = Path(__file__).resolve().parents[2]


class BackendUnavailable(RuntimeError):
    """The test backend cannot be built here (no C++ compiler, no ninja)."""


def build_dir() -> Path:
    import torch

    default = REPOSITORY / "build" / f"testdev-torch{torch.__version__.replace('+', '_')}"
    return Path(os.environ.get("SDC_TESTDEV_BUILD_DIR") or default)


def why_unavailable() -> str | None:
    """Why the backend cannot be built on this machine, or None when it can."""
    compiler = os.environ.get("CXX") or "c++"
    if shutil.which(compiler) is None:
        return f"no C++ compiler ('{compiler}' not on PATH): the PrivateUse1 test backend cannot be built"
    if shutil.which("ninja") is None:
        try:
            import ninja  # noqa: F401  (the pip package brings the binary)
        except ImportError:
            return "no ninja build tool: torch.utils.cpp_extension cannot build the PrivateUse1 test backend"
    return None


def load_or_skip():
    """Register the backend in this process (building it the first time) and plug its devices
    in, or skip the test. ``unplug()`` (run after every test by tests/conftest.py) hides them
    again, so tests that follow in the same process see a machine without accelerators."""
    import importlib

    import pytest

    reason = why_unavailable()
    if reason:
        pytest.skip(reason)
    backend = importlib.import_module(MODULE)
    backend.plug(True)
    return backend


def unplug() -> None:
    """Hide the test backend's devices from discovery, if this process loaded it."""
    import sys

    backend = sys.modules.get(MODULE)
    if backend is not None:
        backend.plug(False)


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for an ``sdc`` subprocess that can import the backend module."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPOSITORY), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env
