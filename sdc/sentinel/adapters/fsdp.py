"""FSDP2 / HSDP adapter: compare only across the replicate dimension of the device mesh.

With HSDP (``fully_shard(model, mesh=mesh)`` on a 2-D mesh ``("replicate", "shard")``) the
ranks of one replicate group hold the same shard of every parameter and receive the same
reduced gradient shard, so their local shards must be bit-identical: the sentinel digests
the local shards (``DTensor.to_local()``) and votes within that group.

Plain FSDP (a 1-D mesh, everything sharded) has no redundant copy of gradients or
parameters: no replica can outvote another, and ``hsdp_sentinel`` refuses a mesh without a
replicate dimension of size 2 or more rather than pretend to compare. ``fsdp_sentinel``
watches such a job with what needs no replica: the sampled GEMM checksums on the Linear
layers (forward and backward, on the unsharded weights FSDP gathers for the computation)
and the local loss flags, shared over the whole mesh so every rank reaches the same verdict.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sdc.sentinel.config import SentinelConfig
from sdc.sentinel.core import ReplicaSentinel


def replicate_group(mesh: Any, dim: str = "replicate") -> Any:
    """The process group of ``mesh``'s replicate dimension; ValueError if it has no redundancy."""
    names = getattr(mesh, "mesh_dim_names", None) or ()
    if dim not in names:
        raise ValueError(
            f"device mesh has dimensions {names}, no {dim!r}: plain FSDP keeps no redundant copy to compare; "
            "use HSDP (a 2-D mesh with a replicate dimension) or rely on the sentinel's local checks"
        )
    sub = mesh[dim]
    if sub.size() < 2:
        raise ValueError(f"the {dim!r} dimension has size {sub.size()}: nothing to compare against")
    return sub.get_group()


def hsdp_sentinel(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    mesh: Any,
    *,
    config: SentinelConfig | None = None,
    dim: str = "replicate",
    **kwargs: Any,
) -> ReplicaSentinel:
    """A sentinel that votes among the ranks of ``mesh[dim]``, on local parameter/gradient shards.

    Every rank calls it. Works because each DTensor shard's ``.to_local()`` is an ordinary
    tensor the fingerprint functions read, and replicas of the same shard must agree bit for bit.
    Replay is not wired for FSDP (re-running the forward would need the all-gathers of the
    whole mesh); a local anomaly is reported as ``unattributed``.
    """
    sentinel = ReplicaSentinel(model, optimizer, group=replicate_group(mesh, dim), config=config, **kwargs)
    sentinel.params = [_ShardView(p) for p in sentinel.params]  # type: ignore[assignment]
    return sentinel


def fsdp_sentinel(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    mesh: Any,
    *,
    config: SentinelConfig | None = None,
    **kwargs: Any,
) -> ReplicaSentinel:
    """A sentinel for plain FSDP: GEMM checksums and local flags over the mesh's group.

    The replica comparisons (gradients, parameters, audits) are turned off: every rank holds
    a different shard, so their digests differ by design.
    """
    from dataclasses import replace

    base = config or SentinelConfig()
    config = replace(base, grad_every=0, param_every=0, audit_every=0, local_every=0,
                     gemm_check_every=base.gemm_check_every or 1)
    sentinel = ReplicaSentinel(model, optimizer, group=mesh.get_group(), config=config, **kwargs)
    sentinel.params = [_ShardView(p) for p in sentinel.params]  # type: ignore[assignment]
    return sentinel


class _ShardView:
    """Duck-typed stand-in for a DTensor parameter: ``.grad``, ``.detach()`` and sizes of the local shard."""

    def __init__(self, param: torch.Tensor):
        self._param = param

    def _local(self, t):
        return t.to_local() if t is not None and hasattr(t, "to_local") else t

    @property
    def grad(self):
        return self._local(self._param.grad)

    @grad.setter
    def grad(self, value):
        self._param.grad = value

    @property
    def data(self):
        return self._local(self._param.data)

    @property
    def device(self):
        return self._local(self._param.data).device

    def detach(self):
        return self._local(self._param.detach())

    def numel(self):
        return self._local(self._param.data).numel()

    def element_size(self):
        return self._param.element_size()

    def is_complex(self):
        return self._param.is_complex()

    def new_zeros(self, *size):
        return self._local(self._param.data).new_zeros(*size)
