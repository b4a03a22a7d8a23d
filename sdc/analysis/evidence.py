"""Evidence as columns: the arrays every analysis reads, with strings turned into integer codes.

The store layer (``sdc.analysis.load``) and the simulator both build an ``Evidence``; the
analyses never see a database row. Each probe result is one row; chips and sweeps are small
side tables indexed by the ``chip`` and ``sweep`` codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

# Status codes: only OK and MISMATCH are evidence; the rest are never faults.
STATUS_CODES = {"ok": 0, "mismatch": 1, "error": 2, "timeout": 3, "skipped": 4}
OK, MISMATCH = 0, 1
NO_DIGEST = -1


@dataclass
class Evidence:
    """Probe results of complete sweeps, as parallel arrays (one entry per result).

    Attributes:
        chip_ids, chip_host, chip_model: per chip (``chip`` codes index these).
        sweep_ids, sweep_time: per sweep (``sweep`` codes index these); time in epoch seconds.
        chip, sweep, cohort, slow_cohort, status, digest, repeats, distinct, throughput,
        result_id: per result. ``cohort`` is (probe, version, case, seed, model, stack);
        ``slow_cohort`` drops the seed (throughput does not depend on it).
        cohort_labels: readable name of each cohort (probe/case), for summaries.
    """

    chip_ids: np.ndarray
    chip_host: np.ndarray
    chip_model: np.ndarray
    sweep_ids: np.ndarray
    sweep_time: np.ndarray
    chip: np.ndarray
    sweep: np.ndarray
    cohort: np.ndarray
    slow_cohort: np.ndarray
    status: np.ndarray
    digest: np.ndarray
    repeats: np.ndarray
    distinct: np.ndarray
    throughput: np.ndarray
    result_id: np.ndarray
    cohort_labels: list[str] = field(default_factory=list)
    # Optional, for evidence loaded with result ids left in the store: per result the code of
    # its (probe, version, case_key, seed), and those tuples; ids are looked up when needed.
    probe_case: np.ndarray | None = None
    probe_case_keys: list[tuple] = field(default_factory=list)
    # Host names, indexed by ``chip_host`` codes (for node-scoped findings).
    host_labels: list[str] = field(default_factory=list)
    # Chip model names, indexed by ``chip_model`` codes (for what the slow test can resolve).
    model_labels: list[str] = field(default_factory=list)

    @property
    def n_results(self) -> int:
        return int(self.chip.shape[0])

    @property
    def n_chips(self) -> int:
        return int(self.chip_ids.shape[0])

    @property
    def time(self) -> np.ndarray:
        """Time of each result: the start of its sweep."""
        return self.sweep_time[self.sweep]

    def evidence_mask(self) -> np.ndarray:
        """Results that count: judged ok or mismatch (errors, timeouts, skips never do)."""
        return self.status <= MISMATCH


class Encoder:
    """Stable integer codes for strings (or tuples), assigned in order of first sight."""

    def __init__(self) -> None:
        self.codes: dict[Any, int] = {}

    def code(self, value: Any) -> int:
        codes = self.codes
        found = codes.get(value)
        if found is None:
            found = codes[value] = len(codes)
        return found

    def many(self, values: Iterable[Any]) -> list[int]:
        codes = self.codes
        return [codes[v] if v in codes else codes.setdefault(v, len(codes)) for v in values]

    def labels(self) -> list[Any]:
        return list(self.codes)


@dataclass
class EvidenceBuilder:
    """Accumulates results batch by batch (as plain lists) and encodes them compactly."""

    chip_enc: Encoder = field(default_factory=Encoder)
    sweep_enc: Encoder = field(default_factory=Encoder)
    cohort_enc: Encoder = field(default_factory=Encoder)
    slow_enc: Encoder = field(default_factory=Encoder)
    digest_enc: Encoder = field(default_factory=Encoder)
    chip_info: dict[str, tuple[str, str]] = field(default_factory=dict)
    sweep_info: dict[str, float] = field(default_factory=dict)
    _parts: list[dict[str, np.ndarray]] = field(default_factory=list)

    def add_chips(self, rows: Iterable[tuple[str, str, str]]) -> None:
        """(chip_id, host, model) rows."""
        for chip_id, host, model in rows:
            self.chip_info[chip_id] = (host, model)

    def add_sweeps(self, rows: Iterable[tuple[str, float]]) -> None:
        """(sweep_id, start time in epoch seconds) rows."""
        for sweep_id, started in rows:
            self.sweep_info[sweep_id] = float(started)

    def add_results(
        self,
        chip_id: Sequence[str],
        sweep_id: Sequence[str],
        probe: Sequence[str],
        probe_version: Sequence[int],
        case_key: Sequence[str],
        seed: Sequence[int],
        stack_hash: Sequence[str],
        status: Sequence[str],
        digest: Sequence[str | None],
        repeats: Sequence[int],
        distinct: Sequence[int],
        throughput: Sequence[float | None],
        result_id: Sequence[str],
    ) -> None:
        chips = self.chip_enc.many(chip_id)
        models = [self.chip_info.get(c, ("", ""))[1] for c in chip_id]
        slow_keys = list(zip(probe, probe_version, case_key, models, stack_hash))
        self._parts.append(
            {
                "chip": np.asarray(chips, dtype=np.int32),
                "sweep": np.asarray(self.sweep_enc.many(sweep_id), dtype=np.int32),
                "slow_cohort": np.asarray(self.slow_enc.many(slow_keys), dtype=np.int32),
                "cohort": np.asarray(self.cohort_enc.many(zip(slow_keys, seed)), dtype=np.int32),
                "status": np.asarray([STATUS_CODES.get(s, 2) for s in status], dtype=np.int8),
                "digest": np.asarray(
                    [NO_DIGEST if d is None else self.digest_enc.code(d) for d in digest], dtype=np.int32
                ),
                "repeats": np.asarray(repeats, dtype=np.int32),
                "distinct": np.asarray(distinct, dtype=np.int32),
                "throughput": np.asarray([np.nan if t is None else t for t in throughput], dtype=np.float64),
                "result_id": np.asarray(result_id, dtype="S64"),
            }
        )

    def build(self) -> Evidence:
        names = ("chip", "sweep", "slow_cohort", "cohort", "status", "digest", "repeats", "distinct", "throughput", "result_id")
        empty = {"result_id": np.zeros(0, dtype="S64"), "throughput": np.zeros(0), "status": np.zeros(0, np.int8)}
        cols = {
            n: (np.concatenate([p[n] for p in self._parts]) if self._parts else empty.get(n, np.zeros(0, np.int32)))
            for n in names
        }
        self._parts = []
        if cols["result_id"].size:
            width = max(1, int(np.char.str_len(cols["result_id"]).max()))
            cols["result_id"] = cols["result_id"].astype(f"S{width}")
        chip_ids = self.chip_enc.labels()
        sweep_ids = self.sweep_enc.labels()
        hosts = [self.chip_info.get(c, ("", ""))[0] for c in chip_ids]
        models = [self.chip_info.get(c, ("", ""))[1] for c in chip_ids]
        return Evidence(
            host_labels=list(dict.fromkeys(hosts)),
            model_labels=list(dict.fromkeys(models)),
            chip_ids=np.asarray(chip_ids, dtype=object),
            chip_host=_codes(hosts),
            chip_model=_codes(models),
            sweep_ids=np.asarray(sweep_ids, dtype=object),
            sweep_time=np.asarray([self.sweep_info.get(s, 0.0) for s in sweep_ids], dtype=np.float64),
            cohort_labels=[_label(key) for key, _seed in self.cohort_enc.labels()],
            **cols,
        )


def _codes(values: list[str]) -> np.ndarray:
    enc = Encoder()
    return np.asarray(enc.many(values), dtype=np.int32)


def _label(slow_key: tuple) -> str:
    probe, _version, case_key, _model, _stack = slow_key
    try:
        import json

        case = json.loads(case_key)
        return f"{probe}/{case.get('name', '?')} {case.get('dtype', '')}".strip()
    except (ValueError, AttributeError):
        return str(probe)


@dataclass
class JobEvidence:
    """Replica-disagreement events from training jobs (``job_events``), one entry per event."""

    event_id: list[str] = field(default_factory=list)
    job_id: list[str] = field(default_factory=list)
    step: list[int] = field(default_factory=list)
    rank: list[int] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)
    diagnosis: list[str] = field(default_factory=list)
    chip_id: list[str | None] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)

    def add(self, event_id, job_id, step, rank, kind, diagnosis, chip_id, time, details) -> None:
        self.event_id.append(event_id)
        self.job_id.append(job_id)
        self.step.append(int(step))
        self.rank.append(int(rank))
        self.kind.append(kind)
        self.diagnosis.append(diagnosis)
        self.chip_id.append(chip_id)
        self.time.append(float(time))
        self.details.append(details or {})

    def __len__(self) -> int:
        return len(self.event_id)
