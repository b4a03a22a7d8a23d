"""Who each replica is: the chip a rank trains on (the identity its node sweeps record, so
sentinel evidence joins sweep evidence of the same chip), its host, and the job's id.

The chip is read from the device of the model's parameters, through ``sdc.node.devices``
for any backend (CUDA, ROCm, XPU, NPU and other PrivateUse1 plug-ins); only a model on the
CPU gets the virtual CPU chip ``host:<hostname>:cpu:<rank>``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from sdc.node import devices
from sdc.sentinel.vote import Suspect


def default_job_id() -> str:
    for name in ("SDC_JOB_ID", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        if os.environ.get(name):
            return os.environ[name]
    return "local"


def _current_index(backend: str) -> int:
    accel = getattr(torch, "accelerator", None)
    if accel is not None and accel.is_available() and accel.current_accelerator().type == backend:
        return int(accel.current_device_index())
    module = getattr(torch, backend, None)
    current = getattr(module, "current_device", None)
    return int(current()) if current is not None else 0


def model_device(params: Sequence[Any]) -> torch.device:
    """The device the model's parameters live on (a DTensor's local shard; CPU if none)."""
    for param in params:
        data = getattr(param, "data", param)
        data = data.to_local() if hasattr(data, "to_local") else data
        if isinstance(data, torch.Tensor) and data.device.type != "meta":
            return data.device
    return torch.device("cpu")


def chip_id_for(device: torch.device, global_rank: int) -> str:
    """The chip id of ``device`` as sdc's device discovery names it; virtual CPU chip per rank."""
    if device.type == "cpu":
        return devices.cpu_chip(global_rank).chip.chip_id
    try:
        index = device.index if device.index is not None else _current_index(device.type)
        return devices.accelerator_chip(device.type, index).chip.chip_id
    except Exception:  # a backend that cannot describe itself still trains; name it by position
        return f"host:{devices.hostname()}:{device.type}:{device.index if device.index is not None else global_rank}"


@dataclass(frozen=True)
class Peers:
    """(global rank, host, chip id) of every replica of the group, by index in the group."""

    rows: tuple[tuple[int, str, str], ...]

    def suspect(self, index: int, params: Sequence[str] = ()) -> Suspect:
        rank, host, chip = self.rows[index]
        return Suspect(rank=rank, host=host, chip_id=chip, params=tuple(params))

    def rank(self, index: int) -> int:
        return self.rows[index][0]


def json_safe(value: Any) -> Any:
    """Details as strict JSON: a non-finite float (an inf loss is exactly what we report) becomes text."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
