"""Lightning adapter: a ``Callback`` that drives a ReplicaSentinel from the Trainer's hooks.

    trainer = Trainer(callbacks=[SentinelCallback(SentinelConfig(...))])

Replay calls ``pl_module.training_step(batch, batch_idx)`` on the unwrapped module; the
comparison group is the data-parallel world (DDP strategy) unless ``group`` is given.
"""

from __future__ import annotations

from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - the old package name
    import pytorch_lightning as pl  # type: ignore[no-redef]

from sdc.sentinel.config import SentinelConfig
from sdc.sentinel.core import ReplicaSentinel
from sdc.sentinel.vote import Verdict


def _loss(output: Any) -> Any:
    return output["loss"] if isinstance(output, dict) else output


class SentinelCallback(pl.Callback):
    def __init__(self, config: SentinelConfig | None = None, group: Any = None, **kwargs: Any):
        self.config = config or SentinelConfig()
        self.group = group
        self.kwargs = kwargs
        self.sentinel: ReplicaSentinel | None = None
        self.verdicts: list[Verdict] = []
        self._batch_idx = 0

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        self.sentinel = ReplicaSentinel(pl_module, optimizer, group=self.group, config=self.config, **self.kwargs)
        if self.sentinel.replay_fn is None:
            self.sentinel.replay_fn = lambda batch: _loss(pl_module.training_step(batch, self._batch_idx))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_idx = batch_idx
        self.sentinel.on_step_begin(trainer.global_step, batch)

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.sentinel.on_loss(loss)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.sentinel.on_grads_ready()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # global_step already counts this step's optimizer step here.
        self.verdicts.append(self.sentinel.on_step_end(self.sentinel.step))

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.sentinel is not None:
            self.sentinel.close()
