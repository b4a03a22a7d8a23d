"""Device plug-ins: import the modules that register a PrivateUse1 backend, before discovery.

A vendor backend (``torch_npu``, ``torch_mlu``, ``torch_musa`` ...) reaches PyTorch as
PrivateUse1: its device type (``npu``) exists only after its module has been imported. torch
imports plug-ins that declare a ``torch.backends`` entry point by itself, unless
``TORCH_DEVICE_BACKEND_AUTOLOAD=0``; every other plug-in must be imported by name. The names
come from ``--backend-module`` (repeatable), else ``$SDC_BACKEND_MODULES`` (comma-separated),
else the config file's top-level ``backend_modules = [...]`` — flags > environment > file, as
every setting. What was loaded is remembered for the process, so a sweep's worker processes
import the same modules before they rebuild a chip's device (see ``ChipHandle``).
"""

from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

ENV_VAR = "SDC_BACKEND_MODULES"
CONFIG_KEY = "backend_modules"
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

_loaded: list[str] = []


class BackendModuleError(ValueError):
    """A backend module could not be named or imported; the message says which and why."""


@dataclass(frozen=True)
class LoadedBackend:
    """A backend module this process imported, and the device type it gave torch (if any)."""

    module: str
    device_type: str | None
    source: str

    def describe(self) -> str:
        registered = f"registered device type '{self.device_type}'" if self.device_type else "registered no new device type"
        return f"{self.module} ({registered}; from {self.source})"


def requested_modules(
    flags: Sequence[str] = (), environ: Mapping[str, str] | None = None, config: Mapping[str, Any] | None = None
) -> tuple[list[str], str]:
    """The backend modules asked for and where they were asked for: (names, source).

    ``flags``: the ``--backend-module`` values; ``config``: the config file's top-level keys.
    """
    import os

    env = os.environ if environ is None else environ
    if flags:
        return _split(flags, "--backend-module"), "--backend-module"
    if env.get(ENV_VAR, "").strip():
        return _split(env[ENV_VAR].split(","), ENV_VAR), ENV_VAR
    value = (config or {}).get(CONFIG_KEY)
    if value:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BackendModuleError(f"config: '{CONFIG_KEY}' must be a list of module names, e.g. [\"torch_npu\"]")
        return _split(value, f"config {CONFIG_KEY}"), f"config {CONFIG_KEY}"
    return [], ""


def _split(values: Iterable[str], source: str) -> list[str]:
    names: list[str] = []
    for raw in values:
        for name in (part.strip() for part in str(raw).split(",")):
            if not name:
                continue
            if not _MODULE_NAME.fullmatch(name):
                raise BackendModuleError(f"{source}: {name!r} is not a Python module name (e.g. torch_npu)")
            if name not in names:
                names.append(name)
    return names


def privateuse1_name() -> str | None:
    """The name PrivateUse1 goes by now (``npu``), or None while no backend has renamed it."""
    import torch

    name = torch._C._get_privateuse1_backend_name()
    return None if name == "privateuseone" else name


def load_backend_modules(names: Sequence[str], source: str = "") -> list[LoadedBackend]:
    """Import each module (once per process); ``BackendModuleError`` when one fails.

    Any failure inside the import (a missing driver, a build error) is reported in one line
    with the module's name: a plug-in that cannot load is an error, never an empty node.
    """
    loaded: list[LoadedBackend] = []
    for name in names:
        before = privateuse1_name()
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or whatever the plug-in's own start-up raises
            detail = " ".join(str(exc).split())[:300] or type(exc).__name__
            where = f" (from {source})" if source else ""
            raise BackendModuleError(f"backend module '{name}'{where} failed to import: {detail}") from None
        after = privateuse1_name()
        if name not in _loaded:
            _loaded.append(name)
        loaded.append(LoadedBackend(name, after if after != before else None, source or "caller"))
    return loaded


def loaded_modules() -> tuple[str, ...]:
    """The backend modules this process has imported through ``load_backend_modules``."""
    return tuple(name for name in _loaded if name in sys.modules)
