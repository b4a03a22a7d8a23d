"""Hugging Face adapter: a ``TrainerCallback`` that drives a ReplicaSentinel.

    callback = SentinelTrainerCallback(SentinelConfig(...))
    trainer = SentinelTrainer(model=..., args=..., sentinel_callback=callback)

The Trainer exposes no hook between the loss and the backward pass, so the loss check,
replay and audits need ``SentinelTrainer`` (a Trainer whose ``compute_loss`` reports to the
sentinel); with the plain callback the cross-replica gradient and parameter checks still run.

Replay calls the Trainer's own ``compute_loss`` on the unwrapped model with the step's
``num_items_in_batch``, so it recomputes exactly the loss the step computed (the Trainer
normalises by the token count of the whole batch and multiplies by the number of processes;
``model(**batch).loss`` does neither). The sentinel's callback runs after every other
callback, so its gradient check sees the gradients the optimizer will use: the Trainer has
already clipped them when its ``on_pre_optimizer_step`` hooks run.
"""

from __future__ import annotations

from typing import Any

from transformers import Trainer, TrainerCallback

from sdc.sentinel.config import SentinelConfig
from sdc.sentinel.core import ReplicaSentinel
from sdc.sentinel.vote import StepVerdict


class SentinelTrainerCallback(TrainerCallback):
    def __init__(self, config: SentinelConfig | None = None, group: Any = None, **kwargs: Any):
        self.config = config or SentinelConfig()
        self.group = group
        self.kwargs = kwargs
        self.sentinel: ReplicaSentinel | None = None
        self.verdicts: list[StepVerdict] = []

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

    def on_save(self, args, state, control, **kwargs):
        """Write the checkpoint's manifest (candidate until a later clean check certifies it)."""
        from sdc.sentinel.certify import certifier_for

        if self.sentinel is not None:
            path = f"{args.output_dir}/checkpoint-{state.global_step}"
            certifier_for(self.sentinel).saved(path, state.global_step, self.sentinel.model)

    def on_train_end(self, args, state, control, **kwargs):
        if self.sentinel is not None:
            self.sentinel.close()


class SentinelTrainer(Trainer):
    """A Trainer that also gives the sentinel each batch (for replay and audits) and each loss."""

    def __init__(self, *args: Any, sentinel_callback: SentinelTrainerCallback, **kwargs: Any):
        # Last, so that a callback that changes the gradients runs before the check.
        super().__init__(*args, callbacks=[*(kwargs.pop("callbacks", None) or []), sentinel_callback], **kwargs)
        self.sentinel_callback = sentinel_callback
        self._replaying = False
        self._num_items: Any = None
        self._wrapper_told = False

    def _replay_loss(self, batch: dict) -> Any:
        """The step's loss recomputed the way the Trainer computed it, without DDP's hooks."""
        self._replaying = True
        try:
            return super().compute_loss(self.model, dict(batch), num_items_in_batch=self._num_items)
        finally:
            self._replaying = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None, **kwargs):
        sentinel = self.sentinel_callback.sentinel
        watching = sentinel is not None and model.training and torch_grad_enabled() and not self._replaying
        if watching:
            if sentinel.step != self.state.global_step:
                sentinel.on_step_begin(self.state.global_step, inputs)
            else:
                sentinel.remember_batch(dict(inputs))
            self._num_items = num_items_in_batch
            if sentinel.replayer.replay_fn is None:
                sentinel.replay_fn = self._replay_loss
            if not self._wrapper_told:  # the first step, on every rank: ``model`` is the DDP wrapper
                self._wrapper_told = True
                sentinel.gradients_reduced_by(model)
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch, **kwargs)
        loss = result[0] if return_outputs else result
        if watching:
            sentinel.on_loss(loss)
        return result


def torch_grad_enabled() -> bool:
    import torch

    return torch.is_grad_enabled()
