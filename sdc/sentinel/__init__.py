"""In-training replica sentinel: fingerprints gradients and parameters across data-parallel
replicas, names the chip that disagrees, and replays steps to tell transient from persistent.

    sentinel = ReplicaSentinel(model, optimizer, config=SentinelConfig())
    ...each step: on_step_begin(step, batch); on_loss(loss); on_grads_ready(); on_step_end(step)

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
from sdc.sentinel.vote import Suspect, Verdict

__all__ = [
    "EXIT_RERUN_ELSEWHERE",
    "EXIT_VALIDATION_FAILED",
    "ReplicaSentinel",
    "SentinelAbort",
    "SentinelConfig",
    "SentinelConfigError",
    "Suspect",
    "Verdict",
]
