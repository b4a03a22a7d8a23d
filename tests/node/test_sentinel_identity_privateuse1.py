"""The sentinel on two and three gloo ranks of a PrivateUse1 device records that device's identity.

Every non-CUDA accelerator used to be recorded as a virtual CPU chip (``host:vm:cpu:1``), so
sentinel evidence never joined the sweep evidence of the same chip (issue 15, item 4). The
sweep side is here (``discover()`` names ``host:<host>:testdev:<i>``); the sentinel side is the
sentinel's own change, so this test is skipped until it lands and is then to be enabled.
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
from sdc.sentinel.core import local_chip_id
rank, world, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
torch.testdev.set_device(rank % 2)
ids = [None] * world
dist.all_gather_object(ids, local_chip_id(rank))
if rank == 0:
    print(json.dumps({"sentinel": ids, "sweep": [h.chip.chip_id for h in discover()]}))
dist.destroy_process_group()
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skip(reason="issue 15 item 4 (the sentinel's chip identity on non-CUDA accelerators) belongs to the sentinel helper; enable once local_chip_id() names PrivateUse1 chips")
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
