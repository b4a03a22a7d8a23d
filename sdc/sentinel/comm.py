"""The few collectives the sentinel uses, over one process group (or none: a single replica).

Every rank of the group must call the same methods in the same order; the sentinel keeps
that promise by deciding only from values every rank has received.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


class Collectives:
    def __init__(self, group: Any = None):
        self.group = group
        self.active = dist.is_available() and dist.is_initialized()
        if self.active:
            self.ranks: list[int] = dist.get_process_group_ranks(group or dist.group.WORLD)
            self.global_rank = dist.get_rank()
            self.index = self.ranks.index(self.global_rank)
            backend = str(dist.get_backend(group)).lower()
            self.device = torch.device("cpu")
            if "nccl" in backend and torch.cuda.is_available():
                self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.ranks, self.global_rank, self.index, self.device = [0], 0, 0, torch.device("cpu")

    @property
    def size(self) -> int:
        return len(self.ranks)

    def max_(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum over replicas (MIN is obtained as ~MAX(~x) by the caller)."""
        values = values.to(self.device)
        if self.active and self.size > 1:
            dist.all_reduce(values, op=dist.ReduceOp.MAX, group=self.group)
        return values

    def max_async(self, values: torch.Tensor) -> "PendingMax":
        """Start an element-wise MAX over replicas; ``.wait()`` returns it as a list of ints.

        Launched before the backward pass, it completes while the backward runs, so the
        per-step exchange of local anomaly flags costs the training loop no waiting.
        """
        values = values.to(self.device)
        if not (self.active and self.size > 1):
            return PendingMax(None, values)
        return PendingMax(dist.all_reduce(values, op=dist.ReduceOp.MAX, group=self.group, async_op=True), values)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Stack every replica's tensor (same shape everywhere): shape (replicas, *tensor.shape)."""
        tensor = tensor.to(self.device).contiguous()
        if not (self.active and self.size > 1):
            return tensor.unsqueeze(0)
        parts = [torch.empty_like(tensor) for _ in range(self.size)]
        dist.all_gather(parts, tensor, group=self.group)
        return torch.stack(parts)

    def gather_objects(self, value: Any) -> list[Any]:
        if not (self.active and self.size > 1):
            return [value]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value, group=self.group)
        return out

    def broadcast_object(self, value: Any, src_index: int) -> Any:
        if not (self.active and self.size > 1):
            return value
        box = [value if self.index == src_index else None]
        dist.broadcast_object_list(box, src=self.ranks[src_index], group=self.group)
        return box[0]

    def broadcast_(self, tensor: torch.Tensor, src_index: int) -> None:
        """Overwrite ``tensor`` in place with replica ``src_index``'s copy."""
        if not (self.active and self.size > 1):
            return
        staged = tensor.detach() if tensor.device == self.device else tensor.detach().to(self.device)
        if not staged.is_contiguous():
            staged = staged.contiguous()
        dist.broadcast(staged, src=self.ranks[src_index], group=self.group)
        if staged.data_ptr() != tensor.data_ptr():
            with torch.no_grad():
                tensor.copy_(staged)

    def all_sum_(self, tensor: torch.Tensor) -> None:
        if not (self.active and self.size > 1):
            return
        staged = tensor if tensor.device == self.device and tensor.is_contiguous() else tensor.to(self.device).contiguous()
        dist.all_reduce(staged, op=dist.ReduceOp.SUM, group=self.group)
        if staged.data_ptr() != tensor.data_ptr():
            tensor.copy_(staged)


class PendingMax:
    def __init__(self, work: Any, values: torch.Tensor):
        self._work, self._values = work, values

    def wait(self) -> list[int]:
        if self._work is not None:
            self._work.wait()
        return self._values.tolist()
