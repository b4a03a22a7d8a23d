"""Lightning adapter: a ``Callback`` that drives a ReplicaSentinel from the Trainer's hooks.

    trainer = Trainer(callbacks=[SentinelCallback(SentinelConfig(...))])

One sentinel step per optimizer step: with ``accumulate_grad_batches=N`` the step begins at
the first micro-batch, the last micro-batch's batch and loss are the ones kept for replay,
and the checks run once, when the optimizer steps. Replay calls
``pl_module.training_step(batch, batch_idx)`` on the module and divides its loss by N, as
Lightning does before the backward pass, so a replay recomputes exactly the step's loss.
The comparison group is the data-parallel world (DDP strategy) unless ``group`` is given.

The package: ``lightning.pytorch`` if installed, else ``pytorch_lightning`` (what the
``lightning`` extra installs); use the callback with the Trainer of the same package.
"""

from __future__ import annotations

from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # the package the extra installs
    import pytorch_lightning as pl  # type: ignore[no-redef]

from sdc.sentinel.config import SentinelConfig
from sdc.sentinel.core import ReplicaSentinel
from sdc.sentinel.vote import StepVerdict


def _loss(output: Any) -> Any:
    return output["loss"] if isinstance(output, dict) else output


class SentinelCallback(pl.Callback):
    def __init__(self, config: SentinelConfig | None = None, group: Any = None, **kwargs: Any):
        self.config = config or SentinelConfig()
        self.group = group
        self.kwargs = kwargs
        self.sentinel: ReplicaSentinel | None = None
        self.verdicts: list[StepVerdict] = []
        self._batch_idx = 0
        self._current_idx = 0
        self._accumulate = 1
        self._open = False  # a sentinel step has begun and its optimizer step not yet run
        self._stepped = False
        self._placed: set[str] = set()

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        self._accumulate = max(1, int(getattr(trainer, "accumulate_grad_batches", 1) or 1))
        self.sentinel = ReplicaSentinel(pl_module, optimizer, group=self.group, config=self.config, **self.kwargs)
        wrapper = getattr(trainer.strategy, "model", None)  # the DDP wrapper, under the DDP strategy
        if wrapper is not None:
            self.sentinel.gradients_reduced_by(wrapper)
        if self.sentinel.replayer.replay_fn is None:
            self.sentinel.replay_fn = lambda batch: _loss(pl_module.training_step(batch, self._batch_idx)) / self._accumulate

    def _last_micro_batch(self, trainer, batch_idx: int) -> bool:
        return (batch_idx + 1) % self._accumulate == 0 or bool(getattr(trainer, "is_last_batch", False))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._current_idx = batch_idx
        if not self._open:
            self.sentinel.on_step_begin(trainer.global_step)
            self._open, self._stepped = True, False
        if self._last_micro_batch(trainer, batch_idx):
            self._batch_idx = batch_idx
            self.sentinel.remember_batch(batch)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        if self._last_micro_batch(trainer, self._current_idx):
            self.sentinel.on_loss(loss)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.sentinel.on_grads_ready()
        self._stepped = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._place_checkpoint(trainer)
        if not self._stepped:
            return  # an accumulation micro-batch: the optimizer has not stepped yet
        self._open = False
        self.verdicts.append(self.sentinel.on_step_end(self.sentinel.step))

    def _place_checkpoint(self, trainer) -> None:
        """Lightning names the file only after ``on_save_checkpoint``: find it once written."""
        certifier = self.sentinel.certifier if self.sentinel is not None else None
        if certifier is None or all(c.path is not None for c in certifier.candidates):
            return
        saver = trainer.checkpoint_callback
        path = getattr(saver, "_last_checkpoint_saved", None) or getattr(saver, "last_model_path", None)
        if path and path not in self._placed:
            self._placed.add(path)
            certifier.place(path)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        """Record the checkpoint's step and parameter digests (a candidate until certified)."""
        from sdc.sentinel.certify import certifier_for

        if self.sentinel is not None:
            certifier_for(self.sentinel).pending(trainer.global_step, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.sentinel is not None:
            self._place_checkpoint(trainer)
            self.sentinel.close()
