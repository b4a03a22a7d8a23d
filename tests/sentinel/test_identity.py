"""The sentinel's chip identity comes from the device of the model's parameters, through sdc's
device discovery, for any backend — the identity the node sweeps record for that chip."""

from __future__ import annotations

import torch
from torch import nn

from sdc.node import devices
from sdc.records import Chip
from sdc.sentinel import ReplicaSentinel, SentinelConfig
from sdc.sentinel.identity import chip_id_for, model_device


# PrivateUse1's name: "privateuseone", or the name a loaded plug-in gave it (the test backend
# of tests/testdev renames it "testdev" for the rest of the process).
def pu1() -> str:
    return torch._C._get_privateuse1_backend_name()


def _chip(backend: str, index: int) -> devices.ChipHandle:
    chip = Chip(chip_id=f"{backend.upper()}-uuid-{index}", host="h", index=index, vendor=backend, model="m",
                memory_bytes=0, stack={}, stack_hash="x")
    return devices.ChipHandle(name=f"{backend}:{index}", device=torch.device("cpu"), chip=chip)


def test_an_accelerator_gets_the_identity_its_sweeps_record(monkeypatch):
    asked, PU1 = [], pu1()
    monkeypatch.setattr(devices, "accelerator_chip", lambda backend, index: asked.append((backend, index)) or _chip(backend, index))
    # Not CUDA: a PrivateUse1 plug-in (openreg, npu ...) is named by its own discovery, never cpu:<rank>.
    assert chip_id_for(torch.device(PU1, 1), global_rank=3) == f"{PU1.upper()}-uuid-1"
    assert chip_id_for(torch.device("cuda", 2), global_rank=0) == "CUDA-uuid-2"
    assert asked == [(PU1, 1), ("cuda", 2)]


def test_a_cpu_model_is_the_virtual_chip_of_its_rank():
    assert chip_id_for(torch.device("cpu"), global_rank=3) == f"host:{devices.hostname()}:cpu:3"


def test_the_device_is_read_from_the_parameters():
    model = nn.Linear(2, 2)
    assert model_device(list(model.parameters())) == torch.device("cpu")
    with torch.device("meta"):
        meta = nn.Linear(2, 2)
    assert model_device(list(meta.parameters()) + list(model.parameters())) == torch.device("cpu")


def test_the_sentinel_records_the_parameters_chip(monkeypatch):
    monkeypatch.setattr("sdc.sentinel.core.model_device", lambda params: torch.device("xpu", 1))
    monkeypatch.setattr(devices, "accelerator_chip", _chip)
    sentinel = ReplicaSentinel(nn.Linear(2, 2), config=SentinelConfig(), deliver=lambda events: None)
    try:
        assert sentinel.chip_id == "XPU-uuid-1"
        assert sentinel.peers.rows[0][2] == "XPU-uuid-1"
    finally:
        sentinel.close()


def test_a_backend_that_cannot_describe_itself_gets_a_positional_id(monkeypatch):
    def broken(backend, index):
        raise RuntimeError("no properties")

    monkeypatch.setattr(devices, "accelerator_chip", broken)
    PU1 = pu1()
    assert chip_id_for(torch.device(PU1, 2), global_rank=0) == f"host:{devices.hostname()}:{PU1}:2"
