"""DDP adapter: local gradients fingerprinted before they are reduced (local non-finite and
norm checks, and the reference a replay is compared with), and a replay function that runs
the wrapped module without DDP's hooks.

Local gradients are seen one of two ways. By default a ``LocalGradTap`` hooks the parameters
on check steps only, leaving DDP's fused C++ reduction alone. With ``inner_hook`` (a comm hook
the job already uses, e.g. PowerSGD or fp16 compression), a comm-hook wrapper digests each
bucket and then runs that hook.
"""

import logging
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from sdc.sentinel.core import ReplicaSentinel
from sdc.sentinel.tap import LocalGradTap

log = logging.getLogger(__name__)


def sentinel_comm_hook(sentinel: ReplicaSentinel, inner: Optional[Callable] = None) -> Callable:
    """A DDP comm hook: digest the local bucket, then run ``inner`` (default: all-reduce mean)."""
    inner = inner or default_hooks.allreduce_hook

    def hook(state: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        try:
            sentinel.observe_local_bucket(bucket.index(), bucket.buffer(), bucket.parameters())
        except Exception:  # never let the check break the reduction
            log.exception("sdc sentinel: local bucket check failed")
        return inner(state, bucket)

    return hook


def attach_ddp(
    ddp_model: nn.parallel.DistributedDataParallel,
    sentinel: ReplicaSentinel,
    *,
    loss_fn: Optional[Callable[[nn.Module, Any], torch.Tensor]] = None,
    inner_hook: Optional[Callable] = None,
    hook_state: Any = None,
) -> ReplicaSentinel:
    """Watch local gradients and, given ``loss_fn(module, batch) -> loss``, set the replay function.

    Without ``inner_hook``: a LocalGradTap (no comm hook, no cost on steps without a local
    check). With it: the comm-hook wrapper around ``inner_hook``, registered with
    ``hook_state`` (what ``inner_hook`` expects; default: the sentinel's process group).
    """
    if inner_hook is None:
        sentinel.local_tap = LocalGradTap(sentinel.params, sentinel.observe_local_bucket)
    else:
        state = hook_state if hook_state is not None else sentinel.comm.group
        ddp_model.register_comm_hook(state, sentinel_comm_hook(sentinel, inner_hook))
    if loss_fn is not None and sentinel.replay_fn is None:
        module = ddp_model.module
        sentinel.replay_fn = lambda batch: loss_fn(module, batch)
    return sentinel
