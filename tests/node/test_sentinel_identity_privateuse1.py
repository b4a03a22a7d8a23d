"""The sentinel on two and three gloo ranks of a PrivateUse1 device records that device's identity.

Every non-CUDA accelerator used to be recorded as a virtual CPU chip (``host:vm:cpu:1``), so
sentinel evidence never joined the sweep evidence of the same chip (issue 15, item 4). The
sweep names ``host:<host>:testdev:<i>`` (``discover()``); each rank of a job whose parameters
live on a testdev device must name the same chip.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.testdev import subprocess_env, why_unavailable

RANK = """
import json, os, sys
import torch, torch.distributed as dist
import tests.testdev.backend
from sdc.node.devices import discover
from sdc.sentinel.identity import chip_id_for, model_device
rank, world, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
torch.testdev.set_device(rank % 2)
params = list(torch.nn.Linear(4, 4).to(f"testdev:{rank % 2}").parameters())
ids = [None] * world
dist.all_gather_object(ids, chip_id_for(model_device(params), rank))
if rank == 0:
    print(json.dumps({"sentinel": ids, "sweep": [h.chip.chip_id for h in discover()]}))
dist.destroy_process_group()
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("world", [2, 3])
def test_sentinel_ranks_name_the_same_chips_as_the_sweep(world):
    if why_unavailable():
        pytest.skip(why_unavailable())
    port = _free_port()
    env = subprocess_env(TORCH_DEVICE_BACKEND_AUTOLOAD="0")
    ranks = [subprocess.Popen([sys.executable, "-c", RANK, str(r), str(world), str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(world)]
    outputs = [p.communicate(timeout=300) for p in ranks]
    assert all(p.returncode == 0 for p in ranks), [err for _, err in outputs]
    found = json.loads(outputs[0][0])
    assert found["sentinel"] == [found["sweep"][r % 2] for r in range(world)]
    assert all(":testdev:" in chip for chip in found["sentinel"])
