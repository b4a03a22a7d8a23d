"""Replay of one training step: capture what the step consumed (batch, RNG state), re-run its
forward and backward through a user- or adapter-provided ``replay_fn(batch) -> loss``, and
fingerprint the result the same way the original step was fingerprinted.

Replay never touches ``.grad`` (gradients come from ``torch.autograd.grad``) and restores the
caller's RNG state afterwards, so training continues exactly as if nothing had happened.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from sdc.digest import Bucket, bucket_sums, digest_sums, tensor_sums, word_count

ReplayFn = Callable[[Any], torch.Tensor]


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def rng_state(state: dict[str, Any]) -> Iterator[None]:
    """Run with ``state`` as the RNG state, then put the caller's state back."""
    saved = capture_rng()
    _set_rng(state)
    try:
        yield
    finally:
        _set_rng(saved)


def to_device(value: Any, device: torch.device) -> Any:
    """A batch with every tensor moved to ``device`` (dicts, lists, tuples followed)."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        moved = [to_device(v, device) for v in value]
        return type(value)(moved) if not hasattr(value, "_fields") else type(value)(*moved)
    return value


@dataclass(frozen=True)
class LocalResult:
    """Fingerprint of one rank's local step: its loss, and its local gradient buckets if seen."""

    loss: tuple[int, int]
    buckets: tuple[tuple[int, int], ...] | None = None

    def matches(self, other: "LocalResult") -> bool:
        if self.loss != other.loss:
            return False
        if self.buckets is None or other.buckets is None:
            return True
        return self.buckets == other.buckets


def loss_fingerprint(loss: torch.Tensor) -> tuple[int, int]:
    total, weighted = digest_sums(loss.detach())
    return int(total), int(weighted)


def replay_grads(replay_fn: ReplayFn, batch: Any, rng: dict[str, Any], params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Loss and local gradients of the step re-run from ``rng`` on ``batch``."""
    with rng_state(rng), torch.enable_grad():
        loss = replay_fn(batch)
        grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return loss.detach(), [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]


def local_result(
    loss: torch.Tensor, grads: Sequence[torch.Tensor], layout: Sequence[Sequence[int]] | None
) -> LocalResult:
    """Fingerprint a replayed step in the layout the DDP hook saw (bucket -> parameter indices)."""
    if layout is None:
        return LocalResult(loss_fingerprint(loss))
    buckets = []
    for indices in layout:
        tensors = [grads[i] for i in indices]
        per = tensor_sums(tensors)
        bucket = Bucket(0, tuple(str(i) for i in indices), tuple(word_count(t) for t in tensors))
        row = bucket_sums(per, [bucket])[0]
        buckets.append((int(row[0]), int(row[1])))
    return LocalResult(loss_fingerprint(loss), tuple(buckets))
