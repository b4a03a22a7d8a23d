"""LocalGradTap: the local gradient of every parameter, fingerprinted as autograd accumulates
it, before a data-parallel reduction replaces it — on check steps only.

DDP's own reduction divides each gradient by the world size while copying it into its bucket
(one pass over memory, in C++). A comm hook turns that into a copy plus a separate division,
a second pass over every gradient on every step. The tap instead adds post-accumulate-grad
hooks on the steps due for a local check and removes them afterwards, so every other step runs
DDP's reduction untouched. The hooks run before DDP's (they are part of accumulating the
gradient), so they see the local gradient, as a replay recomputes it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

Observe = Callable[[int, torch.Tensor, Sequence[torch.Tensor]], None]


class LocalGradTap:
    def __init__(self, params: Sequence[torch.Tensor], observe: Observe):
        self.params = list(params)
        self.observe = observe
        self._handles: list = []

    @property
    def armed(self) -> bool:
        return bool(self._handles)

    def arm(self) -> None:
        """Observe the gradients of the coming backward pass (idempotent)."""
        if self._handles:
            return
        for index, param in enumerate(self.params):
            self._handles.append(param.register_post_accumulate_grad_hook(self._hook(index)))

    def disarm(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, index: int) -> Callable[[torch.Tensor], None]:
        def seen(param: torch.Tensor) -> None:
            if param.grad is not None:
                # With gradient accumulation it fires per micro-batch; the last call, the
                # accumulated local gradient, is the one kept.
                self.observe(index, param.grad, (param,))

        return seen
