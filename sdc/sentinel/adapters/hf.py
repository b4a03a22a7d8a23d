"""Hugging Face adapter: a ``TrainerCallback`` that drives a ReplicaSentinel.

    trainer = Trainer(..., callbacks=[SentinelTrainerCallback(SentinelConfig(...))])

The Trainer exposes no hook between the loss and the backward pass, so the loss check and
replay need ``SentinelTrainer`` (a Trainer whose ``compute_loss`` reports to the sentinel);
with the plain callback the cross-replica gradient and parameter checks still run.
"""

from __future__ import annotations

from typing import Any

from transformers import Trainer, TrainerCallback

from sdc.sentinel.config import SentinelConfig
from sdc.sentinel.core import ReplicaSentinel
from sdc.sentinel.vote import Verdict


class SentinelTrainerCallback(TrainerCallback):
    def __init__(self, config: SentinelConfig | None = None, group: Any = None, **kwargs: Any):
        self.config = config or SentinelConfig()
        self.group = group
        self.kwargs = kwargs
        self.sentinel: ReplicaSentinel | None = None
        self.verdicts: list[Verdict] = []

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.sentinel is None:
            self.sentinel = ReplicaSentinel(model, optimizer, group=self.group, config=self.config, **self.kwargs)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.sentinel.step != state.global_step:  # SentinelTrainer may have started it already
            self.sentinel.on_step_begin(state.global_step)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.sentinel.on_grads_ready()

    def on_step_end(self, args, state, control, **kwargs):
        self.verdicts.append(self.sentinel.on_step_end(self.sentinel.step))

    def on_train_end(self, args, state, control, **kwargs):
        if self.sentinel is not None:
            self.sentinel.close()


class SentinelTrainer(Trainer):
    """A Trainer that also gives the sentinel each batch (for replay) and each loss."""

    def __init__(self, *args: Any, sentinel_callback: SentinelTrainerCallback, **kwargs: Any):
        super().__init__(*args, callbacks=[sentinel_callback, *(kwargs.pop("callbacks", None) or [])], **kwargs)
        self.sentinel_callback = sentinel_callback

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        sentinel = self.sentinel_callback.sentinel
        if sentinel is not None and model.training and torch_grad_enabled():
            if sentinel.step != self.state.global_step:
                sentinel.on_step_begin(self.state.global_step, inputs)
            else:
                sentinel._batch, sentinel._rng = inputs, _rng()
            if sentinel.replay_fn is None:
                unwrapped = self.model
                sentinel.replay_fn = lambda batch: unwrapped(**batch).loss
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
        loss = result[0] if return_outputs else result
        if sentinel is not None and model.training and torch_grad_enabled():
            sentinel.on_loss(loss)
        return result


def torch_grad_enabled() -> bool:
    import torch

    return torch.is_grad_enabled()


def _rng() -> dict:
    from sdc.sentinel.replay import capture_rng

    return capture_rng()
