"""Discover chips and give each a stable identity and a software-stack fingerprint.

Identity is the vendor UUID where the backend exposes one (CUDA and ROCm do). Where none
exists (the CPU, some plug-ins) the fallback is ``host:<hostname>:<backend>:<index>``: the
``host:`` prefix tells operators the id is positional, not burned into the chip.

Testing feature: ``cpu:0,cpu:1,...`` names distinct *virtual* CPU chips, so fleet behaviour
(cohorts, outvoting, injected faults) can be exercised on a machine without accelerators.
"""

from __future__ import annotations

import os
import platform
import re
import socket
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from sdc.node.backends import load_backend_modules, loaded_modules
from sdc.records import Chip, stack_hash


class DeviceError(ValueError):
    pass


@dataclass(frozen=True)
class ChipHandle:
    """A chip as the sweep sees it: its record, the torch device, and the name users typed."""

    name: str
    device: torch.device
    chip: Chip

    def __reduce__(self):
        # A worker process rebuilds the device: a plug-in's device type exists there only
        # once the backend modules this process loaded are imported again.
        return (_rebuild_handle, (self.name, str(self.device), self.chip, loaded_modules()))


def _rebuild_handle(name: str, device: str, chip: Chip, backend_modules: tuple[str, ...]) -> ChipHandle:
    load_backend_modules(backend_modules, "the sweep process")
    return ChipHandle(name=name, device=torch.device(device), chip=chip)


def hostname() -> str:
    return os.environ.get("SDC_HOSTNAME") or socket.gethostname()


def accelerator_backend() -> str | None:
    """The accelerator backend torch is built for on this machine, if any device is present."""
    accel = getattr(torch, "accelerator", None)
    if accel is not None and accel.is_available():
        return accel.current_accelerator().type
    if torch.cuda.is_available():
        return "cuda"
    return None


@lru_cache(maxsize=None)
def software_stack(backend: str) -> dict[str, Any]:
    stack: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version()}
    blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    stack["blas"] = blas.group(1) if blas else "unknown"
    if backend == "cuda":
        stack["runtime"] = f"hip {torch.version.hip}" if torch.version.hip else f"cuda {torch.version.cuda}"
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        stack["cudnn"] = cudnn
        stack["driver"] = _nvml_driver_version()
    elif backend == "cpu":
        stack["runtime"] = "cpu"
        stack["cpu"] = platform.processor() or platform.machine()
    else:
        # XPU, MPS and privateuse1 plug-ins: the backend's own version where torch records one.
        version = getattr(torch.version, backend, None)
        stack["runtime"] = f"{backend} {version}" if isinstance(version, str) else backend
    return stack


# Stack entries kept in the chip record for people but left out of the cohort key: they do
# not change what a kernel computes, and a Python 3.11.8 -> 3.11.9 rollout must not split
# every cohort in two. Everything else (torch, runtime, driver, BLAS, cuDNN, CPU) is keyed on.
NOT_IN_COHORT = frozenset({"python"})


def cohort_stack_hash(stack: dict[str, Any]) -> str:
    """The stack hash cohorts are keyed on: the stack without what does not change kernels."""
    return stack_hash({k: v for k, v in stack.items() if k not in NOT_IN_COHORT})


def _nvml_driver_version() -> str | None:
    try:
        import pynvml  # nvidia-ml-py, optional

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def cpu_chip(index: int) -> ChipHandle:
    host = hostname()
    stack = software_stack("cpu")
    chip = Chip(
        chip_id=f"host:{host}:cpu:{index}",
        host=host,
        index=index,
        vendor="cpu",
        model=_cpu_model(),
        memory_bytes=_memory_bytes(),
        stack=stack,
        stack_hash=cohort_stack_hash(stack),
    )
    return ChipHandle(name=f"cpu:{index}", device=torch.device("cpu"), chip=chip)


def accelerator_chip(backend: str, index: int) -> ChipHandle:
    host = hostname()
    stack = software_stack(backend)
    device = torch.device(backend, index)
    uuid, model, memory, vendor = None, backend, 0, backend
    if backend == "cuda":
        props = torch.cuda.get_device_properties(index)
        uuid = str(getattr(props, "uuid", "") or "") or None
        model, memory = props.name, props.total_memory
        vendor = "amd" if torch.version.hip else "nvidia"
    else:
        model, memory, uuid = _generic_properties(backend, index)
    prefix = "GPU-" if backend == "cuda" else f"{backend.upper()}-"
    chip_id = f"{prefix}{uuid}" if uuid and not uuid.startswith(prefix) else uuid
    chip = Chip(
        chip_id=chip_id or f"host:{host}:{backend}:{index}",
        host=host,
        index=index,
        vendor=vendor,
        model=model,
        memory_bytes=int(memory),
        stack=stack,
        stack_hash=cohort_stack_hash(stack),
    )
    return ChipHandle(name=f"{backend}:{index}", device=device, chip=chip)


def _generic_properties(backend: str, index: int) -> tuple[str, int, str | None]:
    """(model, memory bytes, uuid) from a non-CUDA backend (XPU, MPS, plug-ins), as far as it says."""
    module = getattr(torch, backend, None)
    model, memory, uuid = backend, 0, None
    props_fn = getattr(module, "get_device_properties", None)
    if props_fn is not None:
        try:
            props = props_fn(index)
            model = str(getattr(props, "name", model))
            memory = int(getattr(props, "total_memory", 0) or 0)
            uuid = str(getattr(props, "uuid", "") or "") or None
        except Exception:  # a plug-in without properties still gets a positional identity
            pass
    if not memory:
        memory = device_memory(torch.device(backend, index))[1] or 0
    name_fn = getattr(module, "get_device_name", None)
    if model == backend and name_fn is not None:
        try:
            model = name_fn(index)
        except Exception:
            pass
    return model, memory, uuid


def device_count(backend: str) -> int:
    """Devices of ``backend`` on this node, through torch.accelerator or the backend's module."""
    if backend == "cpu":
        return 1
    if backend == "cuda":
        return torch.cuda.device_count()
    accel = getattr(torch, "accelerator", None)
    try:
        if accel is not None and accel.is_available() and accel.current_accelerator().type == backend:
            return int(accel.device_count())
    except RuntimeError:  # a backend whose hooks are not registered: ask its module
        pass
    module = getattr(torch, backend, None)
    count = getattr(module, "device_count", None)
    try:
        return int(count()) if count else 0
    except Exception:  # a driver error: no usable devices, as torch's own contract says
        return 0


def device_memory(device: torch.device) -> tuple[int | None, int | None]:
    """(free, total) bytes of a device's memory where torch exposes it, else (None, None).

    CUDA/ROCm, XPU and plug-ins that follow the CUDA module's API (``torch.<backend>.mem_get_info``)
    say it; so does ``torch.accelerator.get_memory_info`` in newer torch.
    """
    if device.type == "cpu":
        return None, None
    index = device.index if device.index is not None else 0
    module = getattr(torch, device.type, None)
    for fn in (getattr(module, "mem_get_info", None), getattr(getattr(torch, "accelerator", None), "get_memory_info", None)):
        if fn is None:
            continue
        try:
            free, total = fn(torch.device(device.type, index))
            return int(free), int(total)
        except Exception:  # not implemented by this backend: try the next way, or say unknown
            continue
    return None, None


def discover(spec: str | None = None) -> list[ChipHandle]:
    """Chips to probe: all accelerators found (or the CPU), or those named in ``spec``.

    ``spec`` is a comma-separated list such as ``cuda:0,cuda:1`` or ``cpu:0,cpu:1,cpu:2``.
    """
    if spec:
        return [_parse_one(part.strip()) for part in spec.split(",") if part.strip()]
    backend = accelerator_backend()
    if backend:
        return [accelerator_chip(backend, i) for i in range(device_count(backend))]
    return [cpu_chip(0)]


def _parse_one(name: str) -> ChipHandle:
    match = re.fullmatch(r"([a-z_][a-z0-9_]*)(?::(\d+))?", name)
    if not match:
        raise DeviceError(f"device '{name}': expected BACKEND:INDEX such as cuda:0 or cpu:1")
    backend, index = match.group(1), int(match.group(2) or 0)
    if backend == "cpu":
        return cpu_chip(index)
    try:
        torch.device(backend)
    except RuntimeError:
        raise DeviceError(
            f"device '{name}': '{backend}' is not a PyTorch device type (e.g. cpu, cuda, xpu, mps); "
            "for a plug-in backend, import its module first: --backend-module MODULE, "
            "SDC_BACKEND_MODULES or backend_modules in the config file"
        ) from None
    count = device_count(backend)
    if index >= count:
        raise DeviceError(f"device '{name}': this machine has {count} {backend} device(s)")
    return accelerator_chip(backend, index)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU), so a host timer sees device time."""
    if device.type == "cpu":
        return
    module = getattr(torch, device.type, None)
    sync = getattr(module, "synchronize", None)
    if sync is not None:
        sync(device)
