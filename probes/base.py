"""The probe interface: a probe names its cases for a suite and runs one case on one device."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

SUITES = ("quick", "standard", "burn")


@dataclass(frozen=True)
class Case:
    """One parameterisation of a probe: what the cohort key is built from."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "params": dict(self.params)}


@dataclass
class Outcome:
    """What one run of a case found. Maps one-to-one onto a ProbeResult's judged fields."""

    status: str
    repeats: int = 0
    distinct_repeat_digests: int = 0
    timings: list[float] = field(default_factory=list)
    digest: Optional[str] = None
    reference_digest: Optional[str] = None
    max_abs_err: Optional[float] = None
    max_rel_err: Optional[float] = None
    error_bound: Optional[float] = None
    throughput: Optional[float] = None
    throughput_unit: Optional[str] = None
    message: str = ""
    telemetry: dict[str, Any] = field(default_factory=dict)


class Probe(ABC):
    """A family of deterministic kernels. Subclasses set ``name`` and ``version``.

    Bump ``version`` whenever a change alters outputs: results of different versions are
    never compared with each other.
    """

    name: str = ""
    version: int = 1

    @abstractmethod
    def cases(self, suite: str) -> Sequence[Case]:
        """The cases this probe runs in ``suite`` (empty if it takes no part)."""

    @abstractmethod
    def run(self, case: Case, device: torch.device, seed: int, repeats: int, faults: Any = None) -> Outcome:
        """Run ``case`` ``repeats`` times on ``device`` and judge the output.

        ``faults`` is the chip's ``sdc.faults.FaultInjector`` for drills and tests, or None.
        Raise ``Unsupported`` when the device lacks what the case needs (it becomes ``skipped``).
        """

    def cases_for(self, suite: str, device: torch.device) -> Sequence[Case]:
        """The cases for ``suite`` on this kind of device.

        Defaults to ``cases(suite)``. Built-in probes add accelerator-sized shapes here, so a
        CPU chip runs in seconds while a GPU's quick suite still reaches its large kernels.
        """
        return self.cases(suite)

    def estimate_s(self, case: Case, device: torch.device) -> float:
        """Rough seconds one case takes (all repeats), for ``--budget`` when no history exists."""
        return 1.0

    def timeout_s(self, case: Case) -> Optional[float]:
        """A longer watchdog limit this case needs (burn cases run for minutes), or None."""
        return None


class Unsupported(Exception):
    """The device cannot run this case (dtype, feature, too few devices): recorded as ``skipped``."""
