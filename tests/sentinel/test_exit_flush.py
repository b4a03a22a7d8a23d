"""Events still queued when a training script ends without ``sentinel.close()`` are delivered
at interpreter exit (the documented plain-loop recipe used to lose them)."""

from __future__ import annotations

import subprocess
import sys

from sdc.records import JobEvent
from sdc.store import Store
from sdc.store.migrate import upgrade
from sdc.store.reader import iter_records

SCRIPT = """
import torch
from torch import nn
from sdc.sentinel import ReplicaSentinel, SentinelConfig
model = nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
config = SentinelConfig(grad_every=1, param_every=1, audit_every=1, audit_budget=0, gemm_check_every=0, job_id="exit-flush",
                        database_url={url!r}, outbox_dir={outbox!r})
sentinel = ReplicaSentinel(model, opt, config=config, replay_fn=lambda b: model(b).pow(2).mean())
for step in range(3):
    x = torch.randn(8, 4)
    opt.zero_grad(); sentinel.on_step_begin(step, x)
    loss = model(x).pow(2).mean(); sentinel.on_loss(loss); loss.backward()
    sentinel.on_grads_ready(); opt.step(); sentinel.on_step_end(step)
# no sentinel.close(): the script just ends
"""


def test_events_are_flushed_when_the_script_exits_without_close(tmp_path):
    url = f"sqlite:///{tmp_path / 'sdc.db'}"
    upgrade(url)
    script = SCRIPT.format(url=url, outbox=str(tmp_path / "outbox"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    store = Store(url, tmp_path / "outbox")
    store.flush()
    events = [e for e in iter_records(store.engine(), kinds=["job_event"]) if isinstance(e, JobEvent)]
    store.dispose()
    # grad_check, param_check and audit at each of 3 steps
    assert sorted((e.step, e.kind) for e in events) == sorted((s, k) for s in range(3) for k in ("grad_check", "param_check", "audit"))
