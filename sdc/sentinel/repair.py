"""Repairs the sentinel makes on a finding: drop the step's update on every rank, or copy the
gradients, parameters and optimizer state of a replica that holds the majority's bytes."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from sdc.sentinel.comm import Collectives


def optimizer_tensors(optimizer: torch.optim.Optimizer | None, params: Sequence[Any], names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The optimizer's state tensors (moments, momentum buffers), named ``param:key``, in order."""
    if optimizer is None:
        return {}
    out = {}
    for i, p in enumerate(params):
        param = getattr(p, "_param", p)  # an FSDP shard view keys the optimizer by its DTensor
        for key, value in sorted(optimizer.state.get(param, {}).items()):
            if isinstance(value, torch.Tensor) and value.numel() > 0:
                out[f"{names[i]}:{key}"] = value.to_local() if hasattr(value, "to_local") else value
    return out


def skip_update(params: Sequence[Any]) -> None:
    """No gradients: ``optimizer.step()`` then leaves parameters and optimizer state alone."""
    for p in params:
        p.grad = None


def resync(comm: Collectives, params: Sequence[Any], state: dict[str, torch.Tensor], source_index: int, *, grads: bool) -> None:
    """Overwrite every replica's gradients (``grads``) or parameters and optimizer state with
    replica ``source_index``'s; every rank calls it with the same arguments."""
    with torch.no_grad():
        if grads:
            for p in params:
                if p.grad is not None:
                    comm.broadcast_(p.grad, source_index)
        else:
            for p in params:
                comm.broadcast_(p.data, source_index)
            for tensor in state.values():
                comm.broadcast_(tensor, source_index)
