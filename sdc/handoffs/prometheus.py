"""``sdc export prometheus``: chip states and probe counts as a node_exporter textfile.

Metrics, each labelled by ``host`` and ``chip`` (the chip UUID) and by the labels
dcgm-exporter puts on its series (``UUID``, ``gpu``, ``modelName``, ``Hostname``), so
``... * on(UUID) group_left DCGM_FI_DEV_GPU_TEMP`` works without ``label_replace``:

- ``sdc_chip_state{state}`` 1 for the chip's current state, 0 for the others (one series per
  state, the Prometheus convention for enums: ``sdc_chip_state{state="quarantined"} == 1``);
- ``sdc_chip_drains`` 1 if the chip takes its node out of service (quarantined or retired and
  still in the machine), 0 otherwise; ``sdc_chip_breaker_held`` 1 if it is suspect only
  because the circuit breaker held a quarantine back;
- ``sdc_chip_verdict{kind,severity}`` 1 for each verdict of the fleet's latest analysis
  (``sdc.quarantine.latest``) about the chip: why it is flagged, also for wrong and
  inconsistent verdicts, which have no score; for a released or healthy chip only verdicts
  on evidence newer than its latest transition (``reaches_past_decision``);
- ``sdc_probe_results_total{status}`` probe results stored for the chip, by status;
- ``sdc_last_sweep_timestamp_seconds`` when the chip was last probed;
- ``sdc_verdict_score{kind}`` the score of the chip's verdict of each kind in the fleet's
  latest analysis, where the analysis gives one (slow: the slowdown).

The file is written atomically (a temporary file renamed into place, so node_exporter never
reads half a file) with mode 0644 whatever the umask: node_exporter runs as another user.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from sqlalchemy import Engine, func, select, text

from sdc.files import atomic_write
from sdc.handoffs.state import ChipStatus
from sdc.quarantine.latest import IN_LATEST_ANALYSIS, reaches_past_decision
from sdc.records import CHIP_STATES
from sdc.store.models import ChipRow, ProbeResultRow, VerdictRow

# The labels of dcgm-exporter's series, after sdc's own host and chip.
CHIP_LABELS = ["host", "chip", "UUID", "gpu", "modelName", "Hostname"]

TEXTFILE_NAME = "sdc.prom"


@dataclass(frozen=True)
class ChipMetrics:
    status: ChipStatus
    results: Mapping[str, int] = field(default_factory=dict)
    last_probed: datetime | None = None
    scores: Mapping[str, float] = field(default_factory=dict)
    verdicts: tuple[tuple[str, str], ...] = ()  # (kind, severity) of the latest analysis
    model: str = ""


def read_metrics(engine: Engine, statuses: Mapping[str, Sequence[ChipStatus]]) -> list[ChipMetrics]:
    chips = [c for host in sorted(statuses) for c in statuses[host]]
    ids = [c.chip_id for c in chips]
    by_id = {c.chip_id: c for c in chips}
    now = datetime.now(timezone.utc)
    r, v, c = ProbeResultRow.__table__, VerdictRow.__table__, ChipRow.__table__
    counts: dict[str, dict[str, int]] = {}
    last: dict[str, datetime] = {}
    scores: dict[str, dict[str, float]] = {}
    verdicts: dict[str, tuple[str, set]] = {}
    with engine.connect() as conn:
        models = dict(conn.execute(select(c.c.chip_id, c.c.model).where(c.c.chip_id.in_(ids))).all())
        query = select(v.c.chip_id, v.c.analysis_id, v.c.kind, v.c.severity, v.c.score, v.c.last_seen)
        for chip_id, analysis_id, kind, severity, score, last_seen in conn.execute(
            query.where(v.c.chip_id.in_(ids), text(IN_LATEST_ANALYSIS)).order_by(v.c.created_at, v.c.verdict_id)
        ):
            status = by_id[chip_id]
            if not reaches_past_decision(status.state, status.since, _utc(last_seen), now):
                continue  # weighed before the release: says nothing about the chip now
            verdicts.setdefault(chip_id, (analysis_id, set()))[1].add((kind, severity))
            if score is not None:
                scores.setdefault(chip_id, {})[kind] = float(score)
        query = select(r.c.chip_id, r.c.status, func.count(), func.max(r.c.observed_at)).group_by(r.c.chip_id, r.c.status)
        for chip_id, status, n, at in conn.execute(query.where(r.c.chip_id.in_(ids))):
            counts.setdefault(chip_id, {})[status] = n
            last[chip_id] = max(last.get(chip_id, at), at)
    return [
        ChipMetrics(c, counts.get(c.chip_id, {}), last.get(c.chip_id), scores.get(c.chip_id, {}),
                    tuple(sorted(verdicts.get(c.chip_id, ("", set()))[1])), models.get(c.chip_id, ""))
        for c in chips
    ]


def _utc(value: datetime | None) -> datetime | None:
    """Aware UTC from the lightweight table clause (SQLite hands back naive UTC, or text)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(str(value))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class _Collector:
    """A prometheus_client collector over fixed values (no global registry, no _created series)."""

    def __init__(self, metrics: Iterable[ChipMetrics]):
        self.metrics = list(metrics)

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        L = CHIP_LABELS
        state = GaugeMetricFamily("sdc_chip_state", "1 for the chip's current quarantine state, 0 otherwise", labels=L + ["state"])
        drains = GaugeMetricFamily("sdc_chip_drains", "1 if the chip takes its node out of service", labels=L)
        held = GaugeMetricFamily("sdc_chip_breaker_held", "1 if the chip is suspect because the circuit breaker held it back", labels=L)
        verdict = GaugeMetricFamily("sdc_chip_verdict", "1 for each verdict of the fleet's latest analysis about the chip", labels=L + ["kind", "severity"])
        results = CounterMetricFamily("sdc_probe_results", "Probe results stored for the chip, by status", labels=L + ["status"])
        swept = GaugeMetricFamily("sdc_last_sweep_timestamp_seconds", "When the chip was last probed (Unix time)", labels=L)
        score = GaugeMetricFamily("sdc_verdict_score", "Score of the chip's verdict of each kind in the fleet's latest analysis", labels=L + ["kind"])
        for m in self.metrics:
            chip = m.status
            ids = [chip.host, chip.chip_id, chip.chip_id, str(chip.index), m.model, chip.host]
            for name in CHIP_STATES:
                state.add_metric(ids + [name], 1.0 if chip.state == name else 0.0)
            drains.add_metric(ids, float(chip.drains))
            held.add_metric(ids, float(chip.held))
            for kind, severity in m.verdicts:
                verdict.add_metric(ids + [kind, severity], 1.0)
            for status, n in sorted(m.results.items()):
                results.add_metric(ids + [status], float(n))
            if m.last_probed is not None:
                swept.add_metric(ids, m.last_probed.timestamp())
            for kind, value in sorted(m.scores.items()):
                score.add_metric(ids + [kind], value)
        yield from (state, drains, held, verdict, results, swept, score)


def exposition(metrics: Iterable[ChipMetrics]) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(metrics))
    return generate_latest(registry).decode()


def write_textfile(directory: str | os.PathLike, metrics: Iterable[ChipMetrics], name: str = TEXTFILE_NAME) -> Path:
    """Write the textfile atomically into ``directory``; returns its path."""
    path = Path(directory) / name
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"textfile directory {directory} does not exist (node_exporter's --collector.textfile.directory)")
    # 0644 whatever the umask: node_exporter usually runs as another user than sdc.
    return atomic_write(path, exposition(metrics), mode=0o644)
