"""sdc's test accelerator: a PrivateUse1 backend named ``testdev`` with two devices.

Importing this module does what a vendor plug-in (``torch_npu``, ``torch_mlu`` ...) does:
load the backend's C++ library (here built from ``testdev.cpp`` with
``torch.utils.cpp_extension``, once per CI run, cached in ``build/testdev-torch<version>/`` or
``$SDC_TESTDEV_BUILD_DIR``), rename PrivateUse1 to ``testdev`` and register ``torch.testdev``.
Import it through ``sdc sweep --backend-module tests.testdev`` like any plug-in.

Device memory is host memory capped at ``$SDC_TESTDEV_MEMORY_MIB`` (2048) per device; every op
but the few the backend owns runs through the CPU fallback, so the device is slow and lacks
what young backends lack (Inductor, Triton, a c10d backend, fused attention on the device).
"""

from __future__ import annotations

import os
import shutil
import types
from pathlib import Path

import torch

NAME = "testdev"
SOURCE = Path(__file__).with_name("testdev.cpp")
REPOSITORY = Path(__file__).resolve().parents[2]


class BackendUnavailable(RuntimeError):
    """The test backend cannot be built here (no C++ compiler, no ninja)."""


def build_dir() -> Path:
    default = REPOSITORY / "build" / f"testdev-torch{torch.__version__.replace('+', '_')}"
    return Path(os.environ.get("SDC_TESTDEV_BUILD_DIR") or default)


def why_unavailable() -> str | None:
    """Why the backend cannot be built on this machine, or None when it can."""
    compiler = os.environ.get("CXX") or "c++"
    if shutil.which(compiler) is None:
        return f"no C++ compiler ('{compiler}' not on PATH): the PrivateUse1 test backend cannot be built"
    if shutil.which("ninja") is None:
        try:
            import ninja  # noqa: F401  (the pip package puts the binary on PATH of its own)
        except ImportError:
            return "no ninja build tool: torch.utils.cpp_extension cannot build the PrivateUse1 test backend"
    return None


def _load_library():
    reason = why_unavailable()
    if reason:
        raise BackendUnavailable(reason)
    from torch.utils.cpp_extension import load

    directory = build_dir()
    directory.mkdir(parents=True, exist_ok=True)
    # load() rebuilds only when the source changed, under a file lock: concurrent test
    # processes (workers, gloo ranks) share one build.
    return load(name="sdc_testdev", sources=[str(SOURCE)], build_directory=str(directory), extra_cflags=["-O1"], verbose=False)


def _device_module(library) -> types.ModuleType:
    module = types.ModuleType("torch.testdev")

    def index_of(device=None) -> int:
        if device is None:
            return library.current_device()
        device = torch.device(device) if not isinstance(device, int) else torch.device(NAME, device)
        return device.index if device.index is not None else library.current_device()

    module.device_count = library.device_count
    module.is_available = lambda: True
    module.current_device = library.current_device
    module.set_device = lambda device: library.set_device(index_of(device))
    module.synchronize = lambda device=None: None  # every op completes before it returns
    module.mem_get_info = lambda device=None: tuple(library.mem_get_info(index_of(device)))
    module.get_device_name = lambda device=None: "sdc testdev (host memory)"
    module.is_initialized = lambda: True
    module._is_in_bad_fork = lambda: False
    module.manual_seed_all = lambda seed: None
    return module


def _register() -> None:
    library = _load_library()
    if torch._C._get_privateuse1_backend_name() != NAME:
        torch.utils.rename_privateuse1_backend(NAME)
        torch._register_device_module(NAME, _device_module(library))
        torch.utils.generate_methods_for_privateuse1_backend(for_tensor=True, for_module=True, for_storage=True)


_register()
