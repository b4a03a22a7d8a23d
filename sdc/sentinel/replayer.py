"""The replay half of the sentinel's protocol, run by every rank in lockstep: find which
replica raised a local anomaly, replay its step there, then on a buddy rank; or, when the
reduced gradients have no majority, recompute the reduction and see who kept it.

A mixin of ``ReplicaSentinel``: it uses the sentinel's collectives (``self.comm``), its saved
batch and RNG state, and records findings through ``self._record``.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch

from sdc.digest import tensor_sums
from sdc.sentinel.replay import (
    LocalResult,
    local_result,
    loss_fingerprint,
    replay_grads,
    to_device,
)
from sdc.sentinel.vote import norm_outliers

log = logging.getLogger(__name__)

FLAG_NONFINITE_LOSS, FLAG_LOSS_SPIKE, FLAG_NONFINITE_GRAD = 1, 2, 4
FLAG_NAMES = {FLAG_NONFINITE_LOSS: "nonfinite_loss", FLAG_LOSS_SPIKE: "loss_spike", FLAG_NONFINITE_GRAD: "nonfinite_grad"}


class ReplayProtocol:
    def _local_anomalies(self, norm: float | None) -> None:
        rows = self.comm.gather_objects((self._flags, norm, self._loss_value))
        norms = [r[1] if r[1] is not None else 0.0 for r in rows]
        anomalous = {i for i, r in enumerate(rows) if r[0]}
        if all(r[1] is not None for r in rows):
            anomalous |= set(norm_outliers(norms, self.config.grad_norm_ratio))
        if not anomalous:
            return
        reasons = {i: [name for bit, name in FLAG_NAMES.items() if rows[i][0] & bit] or ["grad_norm_outlier"] for i in anomalous}
        base = {"local_norms": norms, "losses": [r[2] for r in rows]}
        if self.comm.size > 1 and 2 * len(anomalous) > self.comm.size:
            # Most replicas see it: the data or the model, not one chip.
            self._record("local_check", "correct", (), {**base, "anomalous_ranks": [self.comm.ranks[i] for i in sorted(anomalous)]})
            return
        for index in sorted(anomalous):
            diagnosis, extra = self._replay_rank(index)
            suspects = (self._suspect(index, ()),) if diagnosis in ("transient", "persistent", "unattributed") else ()
            self._record("replay" if extra.get("replayed") else "local_check", diagnosis, suspects, {**base, **extra, "reasons": reasons[index]})
            if diagnosis in ("transient", "persistent") and self.config.action in ("skip_step", "resync"):
                self._skip()  # the reduced gradients carry the fault to everyone: drop the update

    def _my_result(self) -> LocalResult | None:
        if self._loss is None:
            return None
        layout = [self._local_layout[i] for i in sorted(self._local_buckets)] if self._local_buckets else None
        buckets = tuple(self._local_buckets[i][0] for i in sorted(self._local_buckets)) if layout else None
        return LocalResult(loss_fingerprint(self._loss), buckets)

    def _layout(self) -> list[tuple[int, ...]] | None:
        if not self._local_buckets or any(-1 in self._local_layout[i] for i in self._local_layout):
            return None
        return [self._local_layout[i] for i in sorted(self._local_layout)]

    def _replay_here(self, batch: Any, rng: dict, layout: list | None) -> LocalResult:
        device = self.params[0].device if self.params else torch.device("cpu")
        loss, grads = replay_grads(self.replay_fn, to_device(batch, device), rng, self.params)
        return local_result(loss, grads, layout)

    def _replay_rank(self, index: int) -> tuple[str, dict]:
        """Replay the anomalous replica ``index``'s step on itself, then on a buddy."""
        can = self.config.replay and self.replay_fn is not None
        if not all(self.comm.gather_objects(can and (self.comm.index != index or self._rng is not None))):
            return "unattributed", {"replayed": False, "why": "no replay_fn or no saved batch"}
        package = None
        if self.comm.index == index:
            try:
                layout = self._layout()
                original = self._my_result()
                if original is not None and layout is None:
                    original = LocalResult(original.loss)
                again = self._replay_here(self._batch, self._rng, layout)
                package = {
                    "same": again.matches(original) if original is not None else None,
                    "batch": to_device(self._batch, torch.device("cpu")),
                    "rng": self._rng,
                    "layout": layout,
                    "original": original,
                }
            except Exception as exc:
                log.exception("sdc sentinel: replay failed on this rank at step %s", self.step)
                package = {"same": None, "error": f"{type(exc).__name__}: {exc}"}
        package = self.comm.broadcast_object(package, index)
        if package.get("same") is None:
            return "unattributed", {"replayed": False, "why": package.get("error", "no local result to compare")}
        if not package["same"]:
            return "transient", {"replayed": True, "replay": "differs on the same rank"}
        if self.comm.size == 1:
            return "unattributed", {"replayed": True, "replay": "reproduces, and there is no buddy replica to tell data from chip"}
        buddy = (index + 1) % self.comm.size
        verdict = None
        if self.comm.index == buddy:
            try:
                again = self._replay_here(package["batch"], package["rng"], package["layout"])
                verdict = again.matches(package["original"])
            except Exception:
                log.exception("sdc sentinel: buddy replay failed at step %s", self.step)
                verdict = None
        verdict = self.comm.broadcast_object(verdict, buddy)
        extra = {"replayed": True, "buddy_rank": self.comm.ranks[buddy]}
        if verdict is None:
            return "unattributed", {**extra, "replay": "buddy replay failed"}
        if verdict:
            return "correct", {**extra, "replay": "buddy reproduces it: the data caused it"}
        return "persistent", {**extra, "replay": "reproduces on the rank, not on its buddy"}

    def _replay_reduction(self, names: Sequence[str]) -> None:
        """No majority on the reduced gradients: recompute them and see which replica kept them."""
        ok = self._rng is not None and self._batch is not None
        if not all(self.comm.gather_objects(ok)):
            return
        mismatch = None
        try:
            _, grads = replay_grads(self.replay_fn, self._batch, self._rng, self.params)
            for g in grads:  # DDP's convention: divide, then sum
                g.div_(self.comm.size)
                self.comm.all_sum_(g)
            want = tensor_sums(grads).tolist()
            have = self._grad_fingerprints().tolist()
            mismatch = [self.names[i] for i, (a, b) in enumerate(zip(want, have)) if a != b and self.params[i].grad is not None]
        except Exception:
            log.exception("sdc sentinel: reduction replay failed at step %s", self.step)
        rows = self.comm.gather_objects(mismatch)
        if any(r is None for r in rows):
            return
        bad = [i for i, r in enumerate(rows) if r]
        if len(bad) == 1 or (bad and len(bad) < self.comm.size):
            suspects = tuple(self._suspect(i, tuple(rows[i])) for i in bad)
            self._record("replay", "divergence", suspects, {"attributed_by": "replay", "disagreeing_params": sorted(set(names))})
            good = next(i for i in range(self.comm.size) if not rows[i])
            if self.config.action == "resync":
                self._resync(good, grads=True)
            elif self.config.action == "skip_step":
                self._skip()
        else:
            self._record("replay", "unattributed", (), {"attributed_by": "replay", "replicas_off": [self.comm.ranks[i] for i in bad]})

