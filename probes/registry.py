"""The probe registry: built-in families plus third-party probes from entry points.

A third-party package exposes a ``Probe`` subclass (or instance) in the entry-point group
``sdc.probes``; it then runs in sweeps like a built-in one.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from probes.base import Probe

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "sdc.probes"

_BUILTIN_MODULES = (
    "probes.gemm",
    "probes.attention",
    "probes.conv",
    "probes.norms",
    "probes.elementwise",
    "probes.memory",
    "probes.transfer",
    "probes.collective",
    "probes.burn",
    "probes.catalog_probe",
)


def _builtin() -> list[Probe]:
    import importlib

    found = []
    for module_name in _BUILTIN_MODULES:
        module = importlib.import_module(module_name)
        found.extend(cls() for cls in getattr(module, "PROBES", ()))
    return found


def _plugins() -> list[Probe]:
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            found.append(obj() if isinstance(obj, type) else obj)
        except Exception as exc:  # a broken plug-in must not stop the built-in probes
            log.warning("probe plug-in %s could not be loaded: %s", ep.name, exc)
    return found


def all_probes() -> dict[str, Probe]:
    probes: dict[str, Probe] = {}
    for probe in _builtin() + _plugins():
        if probe.name in probes:
            log.warning("probe %s defined twice; keeping the first", probe.name)
            continue
        probes[probe.name] = probe
    return probes
