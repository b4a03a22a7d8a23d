"""How the sentinel's findings leave the rank: one JobEvent per finding (through the event
sink, never blocking training), and one incident per fault — a replica that stays diverged
under ``action="log"`` is reported when first named, not again at every later check, until
the replicas agree again."""

from __future__ import annotations

import logging
from typing import Sequence

from sdc.records import JobEvent, new_id, utcnow
from sdc.sentinel.events import EventSink
from sdc.sentinel.identity import json_safe
from sdc.sentinel.vote import Finding, Suspect

log = logging.getLogger(__name__)

# Checks that compare what replicas hold: a replica left diverged keeps failing them.
_STATEFUL = ("param_check", "grad_check", "audit")


class Reporter:
    """Builds and submits the events of one rank; remembers which incidents are open."""

    def __init__(self, sink: EventSink, *, job_id: str, rank: int, world_size: int, host: str, chip_id: str,
                 action: str, record_ok: bool):
        self.sink = sink
        self.job_id, self.rank, self.world_size = job_id, rank, world_size
        self.host, self.chip_id, self.action, self.record_ok = host, chip_id, action, record_ok
        # suspect rank -> step its open incident was first reported
        self.open_incidents: dict[int, int] = {}

    def finding(self, step: int, finding: Finding) -> None:
        """Report a finding as an event, once per incident.

        A parameter check that agrees closes every open incident (the replicas hold the same
        state again, e.g. after a resync); until then a replica named again by a state check
        is the same incident, logged but not reported a second time.
        """
        kind, diagnosis = finding.kind, finding.diagnosis
        if kind == "param_check" and diagnosis == "ok":
            self.open_incidents.clear()
        if diagnosis == "ok" and not self.record_ok:
            return
        if kind in _STATEFUL and diagnosis == "divergence" and finding.suspects:
            ranks = [s.rank for s in finding.suspects]
            if all(r in self.open_incidents for r in ranks):
                log.info("sdc sentinel: step %s %s: ranks %s still diverged since step %s (reported then)", step, kind,
                         ranks, min(self.open_incidents[r] for r in ranks))
                return
            for r in ranks:
                self.open_incidents.setdefault(r, step)
        if diagnosis not in ("ok", "correct"):
            log.warning("sdc sentinel: step %s %s: %s, suspects %s", step, kind, diagnosis, [s.rank for s in finding.suspects])
        self.emit(step, kind, diagnosis, finding.suspects, dict(finding.details))

    def emit(self, step: int, kind: str, diagnosis: str, suspects: Sequence[Suspect], details: dict) -> None:
        try:
            event = JobEvent(
                event_id=new_id(),
                job_id=self.job_id,
                step=max(step, 0),
                rank=self.rank,
                world_size=self.world_size,
                host=self.host,
                kind=kind,
                diagnosis=diagnosis,
                observed_at=utcnow(),
                chip_id=self.chip_id,
                details=json_safe({
                    **details,
                    "suspects": [s.to_dict() for s in suspects],
                    "suspect": any(s.rank == self.rank for s in suspects),
                    "action": self.action,
                }),
            )
            self.sink.submit(event)
        except Exception:
            log.exception("sdc sentinel: could not build an event")
