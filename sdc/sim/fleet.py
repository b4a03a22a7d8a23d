"""Synthetic fleets with planted faults, for tests, demos and benchmarks.

A fleet is hosts × chips (two chip models, two software stacks per model) swept repeatedly,
daily or weekly, with a suite of probe cases and one burn case of tens of thousands of
iterations. Healthy chips get what real fleets show: manufacturing spread, heavy-tailed
timing noise with one-sided outliers, chips that throttle mildly now and then, deep
(5–10 %) throttles of a single sweep on any chip, whole nodes that run slow (power,
cooling), noisy neighbours slowing part of a host, hosts whose first sweep comes late (new
cards), a rare healthy result with a divergent digest (a library's fallback kernel), rare
transient upsets, errors and timeouts, and sweeps killed half-way. A result the sweep
judged ``mismatch`` is retested in a fresh worker in the same sweep, as ``sdc sweep`` does.
Planted faults: persistently wrong on one dtype, intermittently wrong at a rate per run,
slow by 10–30 % or by 5 %, degrading over time, nondeterministic on one probe, and
unreliable (errors and hangs). ``SimulatedFleet.evidence()`` gives the analysis its columns
directly; ``records()`` / ``write_jsonl()`` give JSON lines that ``sdc ingest`` reads, and
``truth()`` the ground truth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

from sdc.analysis.evidence import NO_DIGEST, STATUS_CODES, Evidence
from sdc.records import Chip, ProbeResult, Record, Sweep
from sdc.sim.kinds import FAULT_KINDS

BURN_ITERATIONS = 36_000  # repeats of the burn case: beyond int16, as a real burn of minutes
DEFAULT_CASES = tuple(
    (probe, name, dtype)
    for probe, names in (
        ("gemm", ("square", "odd", "tall")),
        ("attention", ("causal", "long")),
        ("conv", ("3x3", "1x1")),
        ("norms", ("layernorm",)),
        ("elementwise", ("gelu",)),
        ("memory", ("stream",)),
    )
    for name in names
    for dtype in (("fp32", "bf16") if probe in ("gemm", "attention", "conv") else ("fp32", "bf16", "fp16")[:2])
)[:20] + (("burn", "gemm", "bf16"),)
STATUS_NAMES = {code: name for name, code in STATUS_CODES.items()}


@dataclass(frozen=True)
class FleetSpec:
    chips: int = 2000
    chips_per_host: int = 8
    sweeps: int = 20
    models: tuple[str, ...] = ("H100", "MI300X")
    stacks_per_model: int = 2
    cases: tuple[tuple[str, str, str], ...] = DEFAULT_CASES
    repeats: int = 3
    sweep_interval_hours: float = 24.0
    start: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc)
    # Healthy noise. Chips of one model differ by chip_spread (sd, log units) in throughput;
    # each result has heavy-tailed timing noise of scale timing_noise.
    chip_spread: float = 0.006
    timing_noise: float = 0.01
    outlier_rate: float = 0.01
    # Chronic mild throttlers: a share of chips, now and then a few per cent slow.
    throttled_share: float = 0.05
    throttle_prob: float = 0.2
    throttle_depth: tuple[float, float] = (0.005, 0.02)
    # Any chip, any sweep: a deep throttle of one sweep (a hot aisle, a power event).
    deep_throttle_prob: float = 0.01
    deep_throttle_depth: tuple[float, float] = (0.05, 0.10)
    # Whole slow nodes: a share of hosts, every chip slower from some round on.
    slow_node_share: float = 0.02
    slow_node_depth: tuple[float, float] = (0.05, 0.15)
    neighbour_prob: float = 0.05
    # Hosts that join late: their first sweep is at a random later round.
    late_host_share: float = 0.1
    # A healthy result with a valid but divergent digest (another kernel chosen), once.
    divergent_rate: float = 5e-5
    upset_rate: float = 1e-6
    error_rate: float = 1e-3
    incomplete_rate: float = 0.01
    # Planted faults: how many chips of each kind.
    faults: dict[str, int] = field(default_factory=dict)
    intermittent_rate: float = 0.01
    slow_factor: tuple[float, float] = (0.10, 0.30)
    slow5_factor: float = 0.05
    unreliable_rate: float = 0.3  # share of an unreliable chip's results that error or time out
    degrade_per_sweep: tuple[float, float] = (0.01, 0.02)
    nondeterministic_rate: float = 0.5
    onset_max: int | None = None  # faults start at a sweep in [0, onset_max]; default sweeps // 2


@dataclass(frozen=True)
class PlantedFault:
    kind: str
    onset: int  # first sweep round in which the fault shows
    unit: str = ""  # the dtype or probe it affects, where it affects one
    value: float = 0.0  # rate or factor


class SimulatedFleet:
    """A simulated fleet: chips, sweeps, results as arrays, and the faults planted in it."""

    def __init__(self, spec: FleetSpec, seed: int = 0):
        self.spec = spec
        self.seed = seed
        rng = np.random.default_rng(seed)
        self._layout(rng)
        self._plant(rng)
        self._results(rng)

    # -- construction --------------------------------------------------------------------
    def _layout(self, rng: np.random.Generator) -> None:
        s = self.spec
        n_hosts = -(-s.chips // s.chips_per_host)
        host_model = rng.integers(0, len(s.models), n_hosts)
        host_stack = rng.integers(0, s.stacks_per_model, n_hosts)
        self.chip_host = np.arange(s.chips) // s.chips_per_host
        self.chip_model = host_model[self.chip_host]
        self.chip_stack = self.chip_model * s.stacks_per_model + host_stack[self.chip_host]
        self.chip_ids = [f"GPU-{self.seed:04d}-{i:06d}" for i in range(s.chips)]
        self.host_names = [f"node{self.seed:03d}-{h:05d}" for h in range(n_hosts)]
        self.n_hosts = n_hosts
        # One sweep per host per round.
        self.sweep_host = np.tile(np.arange(n_hosts), s.sweeps)
        self.sweep_round = np.repeat(np.arange(s.sweeps), n_hosts)
        jitter = rng.uniform(0, 3600, self.sweep_host.size)
        self.sweep_time = s.start.timestamp() + self.sweep_round * s.sweep_interval_hours * 3600 + jitter
        # Late hosts (new cards): no sweep before the round they join.
        join = np.where(rng.random(n_hosts) < s.late_host_share, rng.integers(1, max(2, s.sweeps), n_hosts), 0)
        self.host_join = join
        self.sweep_exists = self.sweep_round >= join[self.sweep_host]
        self.sweep_complete = (rng.random(self.sweep_host.size) >= s.incomplete_rate) & self.sweep_exists
        self.sweep_ids = [f"sw-{self.seed:04d}-{r:04d}-{h:05d}" for r, h in zip(self.sweep_round, self.sweep_host)]

    def _plant(self, rng: np.random.Generator) -> None:
        s = self.spec
        total = sum(s.faults.values())
        picked = rng.choice(s.chips, size=total, replace=False) if total else np.zeros(0, int)
        onset_max = s.sweeps // 2 if s.onset_max is None else s.onset_max
        dtypes = sorted({c[2] for c in s.cases})
        probes = sorted({c[0] for c in s.cases} - {"burn"})
        self.faults: dict[int, PlantedFault] = {}
        i = 0
        for kind in FAULT_KINDS:
            for _ in range(s.faults.get(kind, 0)):
                chip = int(picked[i])
                i += 1
                onset = int(rng.integers(0, onset_max + 1))
                if kind == "persistent":
                    fault = PlantedFault(kind, onset, unit=str(rng.choice(dtypes)))
                elif kind == "intermittent":
                    fault = PlantedFault(kind, onset, value=s.intermittent_rate)
                elif kind == "slow":
                    fault = PlantedFault(kind, onset, value=float(rng.uniform(*s.slow_factor)))
                elif kind == "slow5":
                    fault = PlantedFault(kind, onset, value=s.slow5_factor)
                elif kind == "unreliable":
                    fault = PlantedFault(kind, onset, value=s.unreliable_rate)
                elif kind == "degrading":
                    fault = PlantedFault(kind, onset, value=float(rng.uniform(*s.degrade_per_sweep)))
                else:
                    fault = PlantedFault(kind, onset, unit=str(rng.choice(probes)), value=s.nondeterministic_rate)
                self.faults[chip] = fault
        # Whole slow nodes, among hosts without a planted chip (so each fault is scored alone).
        planted_hosts = {int(self.chip_host[c]) for c in self.faults}
        slow = (rng.random(self.n_hosts) < s.slow_node_share) & ~np.isin(np.arange(self.n_hosts), list(planted_hosts))
        self.slow_node_onset = np.where(slow, rng.integers(0, max(1, s.sweeps // 2), self.n_hosts), s.sweeps)
        self.slow_node_depth = np.where(slow, rng.uniform(*s.slow_node_depth, self.n_hosts), 0.0)

    def _results(self, rng: np.random.Generator) -> None:
        s = self.spec
        n_chips, n_cases, n_rounds = s.chips, len(s.cases), s.sweeps
        rnd, chip, case = (a.ravel() for a in np.meshgrid(np.arange(n_rounds), np.arange(n_chips), np.arange(n_cases), indexing="ij"))
        n = rnd.size
        host = self.chip_host[chip]
        self.r_round, self.r_chip, self.r_case = rnd.astype(np.int32), chip.astype(np.int32), case.astype(np.int16)
        self.r_sweep = (rnd * self.n_hosts + host).astype(np.int32)

        # Throughput: base per (case, model) × chip spread × case interaction × noise.
        base = rng.uniform(20, 400, (n_cases, len(s.models)))
        chip_factor = rng.normal(0, s.chip_spread, n_chips)
        log_tp = np.log(base[case, self.chip_model[chip]]) + chip_factor[chip] + rng.normal(0, 0.005, (n_chips, n_cases))[chip, case]
        log_tp += s.timing_noise * np.clip(rng.standard_t(3, n), -20, 20)
        outlier = rng.random(n) < s.outlier_rate
        log_tp[outlier] += np.log1p(-rng.uniform(0.1, 0.5, int(outlier.sum())))
        # Throttled-but-healthy chips: now and then a whole sweep runs a few per cent slow.
        throttler = rng.random(n_chips) < s.throttled_share
        episode = (rng.random((n_rounds, n_chips)) < s.throttle_prob) & throttler[None, :]
        depth = rng.uniform(*s.throttle_depth, (n_rounds, n_chips))
        # Deep throttles of one sweep, on any chip.
        deep = rng.random((n_rounds, n_chips)) < s.deep_throttle_prob
        depth = np.where(deep, rng.uniform(*s.deep_throttle_depth, (n_rounds, n_chips)), depth)
        self.r_throttled = (episode | deep)[rnd, chip]
        self.deep_throttles = deep  # rounds x chips: a 5-10 % throttle of that one sweep
        self.chronic_throttler = throttler
        log_tp += np.where(self.r_throttled, np.log1p(-depth[rnd, chip]), 0.0)
        # Whole slow nodes: every chip of the host, from the node's onset on.
        log_tp += np.where(rnd >= self.slow_node_onset[host], np.log1p(-self.slow_node_depth[host]), 0.0)
        # Noisy neighbours: some host-sweeps slow part of their chips' results heavily.
        noisy = rng.random((n_rounds, self.n_hosts)) < s.neighbour_prob
        hit = noisy[rnd, host] & (rng.random(n) < 0.15)
        log_tp[hit] += np.log1p(-rng.uniform(0.05, 0.4, int(hit.sum())))

        digest = np.zeros(n, dtype=np.int64)
        distinct = np.ones(n, dtype=np.int32)
        mismatch = np.zeros(n, dtype=bool)
        self.r_repeats = np.where(np.array([c[0] == "burn" for c in s.cases])[case], BURN_ITERATIONS, s.repeats).astype(np.int32)
        # Rare transient upsets on healthy chips: one repeat differs.
        upset = rng.random((n, s.repeats)) < s.upset_rate
        self._corrupt_repeats(upset, np.arange(n), digest, distinct, mismatch, rng)
        # Rare healthy divergence: another valid kernel gives other bits, once, within the bound.
        divergent = (rng.random(n) < s.divergent_rate) & ~np.isin(chip, list(self.faults))
        digest[divergent] = 5_000_000_000 + np.flatnonzero(divergent)
        persistent = np.zeros(n, dtype=bool)  # rows whose wrong answer a retest reproduces
        rates = np.zeros(n)  # per-run corruption rate of each row, for its retest
        unreliable = np.zeros(n, dtype=bool)

        for c, fault in self.faults.items():
            rows = np.flatnonzero((chip == c) & (rnd >= fault.onset))
            if fault.kind == "persistent":
                rows = rows[np.array([s.cases[k][2] == fault.unit for k in case[rows]], dtype=bool)]
                digest[rows] = 1_000_000_000 + rows  # a wrong answer, the same on every repeat
                mismatch[rows] |= rng.random(rows.size) < 0.5  # the fp64 bound catches some, not all
                persistent[rows] = True
            elif fault.kind == "intermittent":
                runs = rng.random((rows.size, s.repeats)) < fault.value
                self._corrupt_repeats(runs, rows, digest, distinct, mismatch, rng)
                rates[rows] = fault.value
            elif fault.kind in ("slow", "slow5"):
                log_tp[rows] += np.log1p(-fault.value)
            elif fault.kind == "unreliable":
                unreliable[rows] = rng.random(rows.size) < fault.value
            elif fault.kind == "degrading":
                loss = np.minimum(0.5, fault.value * (rnd[rows] - fault.onset + 1))
                log_tp[rows] += np.log1p(-loss)
            else:
                # A kernel that is no longer deterministic: each run gives the right answer
                # only with probability 1 - rate.
                rows = rows[np.array([s.cases[k][0] == fault.unit for k in case[rows]], dtype=bool)]
                runs = rng.random((rows.size, s.repeats)) < fault.value
                self._corrupt_repeats(runs, rows, digest, distinct, mismatch, rng)

        status = np.where(mismatch | (distinct > 1), STATUS_CODES["mismatch"], STATUS_CODES["ok"]).astype(np.int8)
        failed = rng.random(n) < s.error_rate
        status[failed] = rng.choice([STATUS_CODES["error"], STATUS_CODES["timeout"], STATUS_CODES["skipped"]], int(failed.sum()))
        status[unreliable] = rng.choice([STATUS_CODES["error"], STATUS_CODES["timeout"]], int(unreliable.sum()))
        failed |= unreliable
        digest[failed] = NO_DIGEST
        throughput = np.exp(log_tp)
        throughput[failed] = np.nan
        # Sweeps killed half-way: their later chips have no results, and what they have is junk.
        incomplete = ~self.sweep_complete[self.r_sweep]
        junk = incomplete & (rng.random(n) < 0.3)
        status[junk] = STATUS_CODES["mismatch"]
        digest[junk] = 3_000_000_000 + np.flatnonzero(junk)
        keep = ~(incomplete & (chip % s.chips_per_host >= s.chips_per_host // 2)) & self.sweep_exists[self.r_sweep]
        self.r_status, self.r_digest, self.r_distinct, self.r_throughput = status, digest, distinct, throughput
        self.r_retest_of = np.full(n, -1, dtype=np.int64)
        names = ("r_round", "r_chip", "r_case", "r_sweep", "r_throttled", "r_status", "r_digest", "r_distinct",
                 "r_throughput", "r_repeats", "r_retest_of")
        retest = self._retests(keep, persistent, rates, rng)
        for name in names:
            column = getattr(self, name)
            setattr(self, name, np.concatenate([column[keep], column[retest] if name != "r_retest_of" else np.flatnonzero(keep).searchsorted(retest)]))
        # A retest runs the failing case again in a fresh worker: a persistent fault gives the
        # same wrong answer, an intermittent one mostly the right one. Its timing is not kept.
        m = retest.size
        again = rng.random((m, s.repeats)) < rates[retest][:, None]
        wrong_again = persistent[retest] | again[:, 0]
        tail = slice(self.r_chip.size - m, None)
        self.r_digest[tail] = np.where(persistent[retest], digest[retest], np.where(again[:, 0], 6_000_000_000 + retest, 0))
        self.r_distinct[tail] = np.where(again.any(axis=1) & ~again.all(axis=1), again.sum(axis=1) + 1, 1)
        bad = wrong_again | (self.r_distinct[tail] > 1)
        self.r_status[tail] = np.where(bad & (status[retest] == STATUS_CODES["mismatch"]), STATUS_CODES["mismatch"], STATUS_CODES["ok"])
        self.r_throughput[tail] = np.nan

    def _retests(self, keep: np.ndarray, persistent: np.ndarray, rates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Rows the sweep retests: judged mismatch with agreeing repeats, in complete sweeps."""
        wrong = (self.r_status == STATUS_CODES["mismatch"]) & (self.r_distinct == 1) & keep
        return np.flatnonzero(wrong & self.sweep_complete[self.r_sweep])

    def _corrupt_repeats(self, runs, rows, digest, distinct, mismatch, rng) -> None:
        """Apply per-run corruption: a corrupted first run changes the reported digest."""
        any_bad = runs.any(axis=1)
        if not any_bad.any():
            return
        bad_rows = rows[any_bad]
        n_bad = runs[any_bad].sum(axis=1)
        all_bad = n_bad == runs.shape[1]
        distinct[bad_rows] = np.where(all_bad, np.minimum(n_bad, runs.shape[1]), n_bad + 1).astype(np.int16)
        mismatch[bad_rows] = True
        first = runs[any_bad, 0]
        digest[bad_rows[first]] = 4_000_000_000 + bad_rows[first]

    # -- views ---------------------------------------------------------------------------
    def evidence(self, upto_round: int | None = None) -> Evidence:
        """The analysis's columns for complete sweeps up to and including ``upto_round``."""
        s = self.spec
        mask = self.sweep_complete[self.r_sweep]
        if upto_round is not None:
            mask &= self.r_round <= upto_round
        rows = np.flatnonzero(mask)
        n_cases, n_stacks = len(s.cases), len(s.models) * s.stacks_per_model
        stack = self.chip_stack[self.r_chip[rows]]
        slow_cohort = self.r_case[rows].astype(np.int64) * n_stacks + stack
        cohort = slow_cohort * s.sweeps + self.r_round[rows]
        labels = [f"{s.cases[c][0]}/{s.cases[c][1]} {s.cases[c][2]}" for c in range(n_cases) for _ in range(n_stacks * s.sweeps)]
        digest = self.r_digest[rows]
        _, digest_code = np.unique(digest, return_inverse=True)
        digest_code = np.where(digest == NO_DIGEST, NO_DIGEST, digest_code).astype(np.int32)
        return Evidence(
            chip_ids=np.asarray(self.chip_ids, dtype=object),
            chip_host=self.chip_host.astype(np.int32),
            chip_model=self.chip_model.astype(np.int32),
            sweep_ids=np.asarray(self.sweep_ids, dtype=object),
            sweep_time=self.sweep_time,
            chip=self.r_chip[rows],
            sweep=self.r_sweep[rows],
            cohort=cohort.astype(np.int32),
            slow_cohort=slow_cohort.astype(np.int32),
            status=self.r_status[rows],
            digest=digest_code,
            repeats=self.r_repeats[rows],
            distinct=self.r_distinct[rows],
            throughput=self.r_throughput[rows],
            result_id=rows,  # row numbers stand in for ids in the fast path
            cohort_labels=labels,
            host_labels=list(self.host_names),
            model_labels=list(s.models),
        )

    def round_time(self, upto_round: int) -> float:
        """A time just after every sweep of ``upto_round`` (the 'now' of an analysis then)."""
        return float(self.sweep_time[self.sweep_round == upto_round].max()) + 60.0

    def truth(self) -> dict[str, dict]:
        return {
            self.chip_ids[c]: {"fault": f.kind, "onset_sweep": f.onset, "unit": f.unit, "value": f.value}
            for c, f in sorted(self.faults.items())
        }

    # -- records -------------------------------------------------------------------------
    def records(self, time_shift: float = 0.0) -> Iterator[Record]:
        """Chips, sweeps and probe results as records (parents first). ``time_shift`` in seconds."""
        s = self.spec
        observed = datetime.fromtimestamp(s.start.timestamp() + time_shift, tz=timezone.utc)
        for c, chip_id in enumerate(self.chip_ids):
            model = s.models[self.chip_model[c]]
            stack = {"torch": "2.13.0", "driver": f"{model}-drv-{self.chip_stack[c] % s.stacks_per_model}"}
            yield Chip(chip_id=chip_id, host=self.host_names[self.chip_host[c]], index=c % s.chips_per_host, vendor="sim",
                       model=model, memory_bytes=80 << 30, stack=stack, stack_hash=_stack_hash(self.chip_stack[c]), observed_at=observed)
        times = [datetime.fromtimestamp(t + time_shift, tz=timezone.utc) for t in self.sweep_time]
        for i, sweep_id in enumerate(self.sweep_ids):
            if not self.sweep_exists[i]:  # the host had not joined yet
                continue
            done = bool(self.sweep_complete[i])
            yield Sweep(sweep_id=sweep_id, host=self.host_names[self.sweep_host[i]], suite="standard", started_at=times[i],
                        status="complete" if done else "incomplete", sdc_version="sim", finished_at=times[i] + timedelta(minutes=20) if done else None,
                        message="" if done else "killed half-way (simulated)")
        cases = [{"name": n, "shape": [1024, 1024], "dtype": d, "params": {}} for p, n, d in s.cases]

        def result_id(i: int) -> str:
            base = f"{self.sweep_ids[int(self.r_sweep[i])]}-{int(self.r_chip[i]):06d}-{int(self.r_case[i]):02d}"
            return base if self.r_retest_of[i] < 0 else base + "-retest"

        for i in range(self.r_chip.size):
            c, k, sw = int(self.r_chip[i]), int(self.r_case[i]), int(self.r_sweep[i])
            status = STATUS_NAMES[int(self.r_status[i])]
            d = int(self.r_digest[i])
            tp = float(self.r_throughput[i])
            judged = status in ("ok", "mismatch")
            timed = judged and np.isfinite(tp)
            telemetry: dict = {"throttle_reasons": ["hw_thermal_slowdown"]} if self.r_throttled[i] else {}
            if self.r_retest_of[i] >= 0:
                telemetry["retest_of"] = result_id(int(self.r_retest_of[i]))
            yield ProbeResult(
                result_id=result_id(i), sweep_id=self.sweep_ids[sw], chip_id=self.chip_ids[c],
                probe=s.cases[k][0], probe_version=1, case=cases[k], seed=int(self.r_round[i]), status=status,
                stack_hash=_stack_hash(self.chip_stack[c]), repeats=int(self.r_repeats[i]) if judged else 0,
                distinct_repeat_digests=int(self.r_distinct[i]) if judged else 0,
                timings=[round(1.0 / tp, 6)] if timed else [], observed_at=times[sw],
                digest=f"{k:04x}{self.r_round[i]:04x}{self.chip_stack[c]:04x}{d:020x}" if judged else None,
                throughput=tp if timed else None, throughput_unit="TFLOP/s" if timed else None,
                message="" if judged else "simulated failure to run",
                telemetry=telemetry,
            )

    def write_jsonl(self, path: str | Path, time_shift: float = 0.0) -> int:
        count = 0
        with open(path, "w", encoding="utf-8") as fh:
            for record in self.records(time_shift):
                fh.write(record.to_json())
                fh.write("\n")
                count += 1
        return count

    def write_truth(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.truth(), indent=2, sort_keys=True) + "\n")


def _stack_hash(stack_code: int) -> str:
    return f"simstack{int(stack_code):08x}"


def parse_faults(text: str) -> dict[str, int]:
    """'slow=3,persistent=2' → {'slow': 3, 'persistent': 2}; raises ValueError naming the problem."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, count = part.partition("=")
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; choose from {', '.join(FAULT_KINDS)}")
        if not count.isdigit():
            raise ValueError(f"fault {kind!r} needs a count, like {kind}=2")
        out[kind] = int(count)
    return out
