"""In-training replica sentinel: digests gradients, parameters and optimizer state across
data-parallel replicas, recomputes sampled work on every replica (audits), names the chip
that disagrees, and replays steps to tell transient from persistent.

    sentinel = ReplicaSentinel(model, optimizer, config=SentinelConfig(), replay_fn=...)
    ...each step: on_step_begin(step, batch); on_loss(loss); on_grads_ready(); on_step_end(step)
    sentinel.close()

See docs/sentinel.md; adapters for DDP, FSDP2/HSDP, Lightning and Hugging Face live in
``sdc.sentinel.adapters``.
"""

from sdc.sentinel.config import (
    EXIT_RERUN_ELSEWHERE,
    EXIT_VALIDATION_FAILED,
    SentinelConfig,
    SentinelConfigError,
)
from sdc.sentinel.core import ReplicaSentinel, SentinelAbort
from sdc.sentinel.vote import Finding, StepVerdict, Suspect

__all__ = [
    "EXIT_RERUN_ELSEWHERE",
    "EXIT_VALIDATION_FAILED",
    "Finding",
    "ReplicaSentinel",
    "SentinelAbort",
    "SentinelConfig",
    "SentinelConfigError",
    "StepVerdict",
    "Suspect",
]
