"""``sdc export prometheus``: chip states and probe counts as a node_exporter textfile.

Metrics, each labelled by ``host`` and ``chip`` (the chip UUID):

- ``sdc_chip_state{state}`` 1 for the chip's current state, 0 for the others (one series per
  state, the Prometheus convention for enums: ``sdc_chip_state{state="quarantined"} == 1``);
- ``sdc_probe_results_total{status}`` probe results stored for the chip, by status;
- ``sdc_last_sweep_timestamp_seconds`` when the chip was last probed;
- ``sdc_verdict_score{kind}`` the score of the chip's latest verdict of each kind.

The file is written through prometheus_client's ``write_to_textfile``, which writes a
temporary file and renames it, so node_exporter never reads half a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from sqlalchemy import Engine, func, select

from sdc.files import atomic_write
from sdc.handoffs.state import ChipStatus
from sdc.records import CHIP_STATES
from sdc.store.models import ProbeResultRow, VerdictRow

TEXTFILE_NAME = "sdc.prom"


@dataclass(frozen=True)
class ChipMetrics:
    status: ChipStatus
    results: Mapping[str, int] = field(default_factory=dict)
    last_probed: datetime | None = None
    scores: Mapping[str, float] = field(default_factory=dict)


def read_metrics(engine: Engine, statuses: Mapping[str, Sequence[ChipStatus]]) -> list[ChipMetrics]:
    chips = [c for host in sorted(statuses) for c in statuses[host]]
    ids = [c.chip_id for c in chips]
    r, v = ProbeResultRow.__table__, VerdictRow.__table__
    counts: dict[str, dict[str, int]] = {}
    last: dict[str, datetime] = {}
    scores: dict[str, dict[str, float]] = {}
    with engine.connect() as conn:
        query = select(r.c.chip_id, r.c.status, func.count(), func.max(r.c.observed_at)).group_by(r.c.chip_id, r.c.status)
        for chip_id, status, n, at in conn.execute(query.where(r.c.chip_id.in_(ids))):
            counts.setdefault(chip_id, {})[status] = n
            last[chip_id] = max(last.get(chip_id, at), at)
        query = select(v.c.chip_id, v.c.kind, v.c.score).where(v.c.chip_id.in_(ids), v.c.score.is_not(None))
        for chip_id, kind, score in conn.execute(query.order_by(v.c.created_at, v.c.verdict_id)):
            scores.setdefault(chip_id, {})[kind] = float(score)
    return [ChipMetrics(c, counts.get(c.chip_id, {}), last.get(c.chip_id), scores.get(c.chip_id, {})) for c in chips]


class _Collector:
    """A prometheus_client collector over fixed values (no global registry, no _created series)."""

    def __init__(self, metrics: Iterable[ChipMetrics]):
        self.metrics = list(metrics)

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        state = GaugeMetricFamily("sdc_chip_state", "1 for the chip's current quarantine state, 0 otherwise", labels=["host", "chip", "state"])
        results = CounterMetricFamily("sdc_probe_results", "Probe results stored for the chip, by status", labels=["host", "chip", "status"])
        swept = GaugeMetricFamily("sdc_last_sweep_timestamp_seconds", "When the chip was last probed (Unix time)", labels=["host", "chip"])
        score = GaugeMetricFamily("sdc_verdict_score", "Score of the chip's latest verdict of each kind", labels=["host", "chip", "kind"])
        for m in self.metrics:
            host, chip = m.status.host, m.status.chip_id
            for name in CHIP_STATES:
                state.add_metric([host, chip, name], 1.0 if m.status.state == name else 0.0)
            for status, n in sorted(m.results.items()):
                results.add_metric([host, chip, status], float(n))
            if m.last_probed is not None:
                swept.add_metric([host, chip], m.last_probed.timestamp())
            for kind, value in sorted(m.scores.items()):
                score.add_metric([host, chip, kind], value)
        yield from (state, results, swept, score)


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
