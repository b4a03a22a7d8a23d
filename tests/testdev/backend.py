"""Importing this module registers the ``testdev`` PrivateUse1 backend (see ``tests.testdev``)."""

from __future__ import annotations

import types

import torch

from tests.testdev import NAME, SOURCE, BackendUnavailable, build_dir, why_unavailable

_library = None


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
    module.is_available = library.is_available
    module.current_device = library.current_device
    module.set_device = lambda device: library.set_device(index_of(device))
    module.synchronize = lambda device=None: None  # every op completes before it returns
    module.mem_get_info = lambda device=None: tuple(library.mem_get_info(index_of(device)))
    module.get_device_name = lambda device=None: "sdc testdev (host memory)"
    module.is_initialized = lambda: True
    module._is_in_bad_fork = lambda: False
    module.manual_seed_all = lambda seed: None
    return module


def plug(plugged: bool = True) -> None:
    """Show the devices to discovery (the default), or hide them again (between tests)."""
    _library.set_plugged(plugged)


def _register() -> None:
    global _library
    library = _library = _load_library()
    if torch._C._get_privateuse1_backend_name() != NAME:
        torch.utils.rename_privateuse1_backend(NAME)
        torch._register_device_module(NAME, _device_module(library))
        torch.utils.generate_methods_for_privateuse1_backend(for_tensor=True, for_module=True, for_storage=True)


_register()
