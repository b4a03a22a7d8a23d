"""SentinelConfig: how often the replica sentinel checks, what it does on a finding, where events go."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

Action = Literal["log", "skip_step", "resync", "raise"]
ACTIONS: tuple[str, ...] = ("log", "skip_step", "resync", "raise")

# Megatron-LM's rerun state machine uses these: 16 asks for the job to be resumed elsewhere
# to disambiguate (we could not say which chip), 17 means result validation failed.
EXIT_RERUN_ELSEWHERE = 16
EXIT_VALIDATION_FAILED = 17


class SentinelConfigError(ValueError):
    pass


@dataclass(frozen=True)
class SentinelConfig:
    """Settings of a ReplicaSentinel. The defaults are measured in docs/sentinel.md (costs).

    Args:
        grad_every: compare the reduced gradients across replicas every N steps (0: never).
        param_every: compare parameters (and optimizer state) every N steps (0: never); by
            default on every gradient check, so a state fault is named within one period.
        optimizer_state: also compare optimizer state tensors at parameter checks.
        flags_every: on every N-th step, make sure a non-finite value on any rank is replayed
            and named at that step. Where the gradients the sentinel sees are the all-reduce
            of every rank's (DDP, or one replica), a NaN/Inf anywhere upstream of the loss
            reaches every rank's reduced gradients: each rank checks a sample of them for
            finiteness (no collective) and, only if one is not finite, all exchange their
            local flags to find the origin. Elsewhere (FSDP shards) the flags travel in an
            async all-reduce of two int64s overlapped with the backward pass. 1 (default):
            every step. 0: only on check steps; an anomaly on another step is then a
            ``local_check`` event of this rank alone.
        local_every: digest each local gradient before its reduction every N steps, for the
            local norm/non-finite checks and replay (0: never).
        audit_every: run a recompute audit every N steps: all replicas recompute forward and
            backward of the same slice of one rank's batch under deterministic kernels and
            compare the digests of the loss and every local gradient (0: never). Needs a
            replay function (the adapters set one).
        audit_samples: rows of the owner's batch the audit recomputes (2: BatchNorm needs
            more than one row in training mode).
        audit_repeats: how many times each rank computes the audit (default 2); a rank whose
            repeats differ is named at once, without a majority (an intermittent fault that
            hits a share p of the forward passes is caught by one audit with probability
            1 - (1 - p)^2). 1: once.
        check_budget: the share of training time the sentinel may take (default 0.01: 1 %),
            shared by every periodic check (local and reduced gradient digests, parameter and
            optimizer-state digests, audits, GEMM checksums) less what its every-step work takes. After each
            check step the ranks agree on one factor that stretches every base period
            (``grad_every`` ...) until the measured costs fit (``schedule.py``); 0: every
            check exactly at its base period, whatever it costs.
        max_check_seconds: the longest period the budget may stretch a check to, in wall
            time at the median step time (default 300: a fault is named at most five minutes
            late, or one base period where that is longer; where the budget would need more,
            the budget gives way). 0: no time cap.
        max_check_period: the same cap in steps (default 0: none; set it to bound how many
            steps a fault can poison, whatever their length).
        audit_budget: the former name of ``check_budget`` (audits only); if set, used as
            ``check_budget``.
        gemm_check_every: every N steps, a sampled GEMM checksum on a rotating subset of the
            model's ``nn.Linear`` layers, forward and backward (0: never); a periodic check
            like the others, under ``check_budget``.
        gemm_check_layers: how many Linear layers one checked step covers.
        action: what to do on a finding: ``log``, ``skip_step`` (drop this step's update),
            ``resync`` (copy parameters and optimizer state from a majority rank) or
            ``raise`` (exit 16 when no chip can be named, 17 when one is).
        loss_spike_factor: a loss above this factor times the median of the recent losses is a spike.
        loss_window: how many recent losses that median is taken over.
        warmup_steps: steps before loss spikes count (early losses fall fast).
        grad_norm_ratio: a local gradient norm this many times away from the ranks' median
            is an outlier (replayed; a replay that reproduces on a buddy is the data's).
        replay: re-run the step on a local anomaly or an unattributed disagreement.
        job_id: names the job in events (default: $SDC_JOB_ID, $SLURM_JOB_ID, $TORCHELASTIC_RUN_ID).
        database_url / outbox_dir: where events go (default: sdc settings).
        record_ok: also send an event for checks that found nothing.
        bucket_bytes: size of the fingerprint buckets.
        chip_id: override the chip identity of this rank.
    """

    grad_every: int = 20
    param_every: int = 20
    optimizer_state: bool = True
    local_every: int = 20
    flags_every: int = 1
    audit_every: int = 20
    audit_samples: int = 2
    audit_repeats: int = 2
    check_budget: float = 0.01
    max_check_seconds: float = 300.0
    max_check_period: int = 0
    audit_budget: Optional[float] = None
    gemm_check_every: int = 50
    gemm_check_layers: int = 1
    action: Action = "log"
    loss_spike_factor: float = 10.0
    loss_window: int = 50
    warmup_steps: int = 20
    grad_norm_ratio: float = 3.0
    replay: bool = True
    job_id: Optional[str] = None
    database_url: Optional[str] = None
    outbox_dir: Optional[str] = None
    record_ok: bool = True
    bucket_bytes: int = 25 << 20
    chip_id: Optional[str] = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise SentinelConfigError(f"SentinelConfig.action: {self.action!r} is not one of {', '.join(ACTIONS)}")
        for name in ("grad_every", "param_every", "local_every", "flags_every", "warmup_steps", "audit_every",
                     "gemm_check_every", "gemm_check_layers", "max_check_period"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise SentinelConfigError(f"SentinelConfig.{name}: must be an integer >= 0 (0 turns it off), got {value!r}")
        for name in ("loss_spike_factor", "grad_norm_ratio"):
            if not getattr(self, name) > 1.0:
                raise SentinelConfigError(f"SentinelConfig.{name}: must be above 1.0, got {getattr(self, name)!r}")
        if self.audit_budget is not None:
            object.__setattr__(self, "check_budget", self.audit_budget)  # the former name
        if not (isinstance(self.max_check_seconds, (int, float)) and self.max_check_seconds >= 0):
            raise SentinelConfigError(f"SentinelConfig.max_check_seconds: must be a number of seconds >= 0 (0: no time cap), "
                                      f"got {self.max_check_seconds!r}")
        if not (isinstance(self.check_budget, (int, float)) and 0.0 <= self.check_budget < 1.0):
            raise SentinelConfigError(f"SentinelConfig.check_budget: must be a share in [0, 1), got {self.check_budget!r}")
        for name in ("audit_samples", "audit_repeats", "loss_window"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SentinelConfigError(f"SentinelConfig.{name}: must be an integer >= 1, got {value!r}")
        if self.bucket_bytes <= 0:
            raise SentinelConfigError(f"SentinelConfig.bucket_bytes: must be positive, got {self.bucket_bytes!r}")

    @classmethod
    def from_mapping(cls, values: dict) -> "SentinelConfig":
        """From the ``[sentinel]`` table of the sdc config file; unknown keys are an error."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise SentinelConfigError(f"[sentinel]: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)


def due(every: int, step: int) -> bool:
    return every > 0 and step % every == 0
