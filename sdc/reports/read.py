"""The quarantine report read from the store: chips, quarantine events, verdicts, and for
flagged chips their probe results and cohorts, assembled into a ``FleetReport`` (SQL here,
values in ``model``).

State comes from the chip's current state (``sdc.quarantine.current_states``: the latest
*applied* quarantine event). An event whose ``details["dry_run"]`` is true is what the
analysis *would* have done: it is shown as the chip's proposed state and provenance, and never
drains anything.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import Engine, func, select, text

from sdc.quarantine.latest import LATEST_ANALYSIS_SQL, reaches_past_decision
from sdc.quarantine.states import current_states, is_breaker_hold, is_dry_run, is_replaced
from sdc.records import utcnow
from sdc.reports.actions import Action, recommend
from sdc.reports.model import (
    CaseEvidence,
    ChipReport,
    FleetReport,
    Identity,
    Provenance,
    Throughput,
    VerdictView,
)
from sdc.store.models import ChipRow, ProbeResultRow, SweepRow, VerdictRow

# Throughput samples drawn for a cohort plot; enough for a distribution, bounded for 10k chips.
COHORT_SAMPLE_LIMIT = 5_000


def _identities(engine: Engine) -> dict[str, Identity]:
    t = ChipRow.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(t.c.chip_id, t.c.host, t.c.index, t.c.vendor, t.c.model, t.c.stack, t.c.stack_hash))
        return {r[0]: Identity(r[0], r[1], r[2], r[3], r[4], dict(r[5] or {}), r[6]) for r in rows}


def latest_events(engine: Engine) -> tuple[dict[str, Provenance], dict[str, Provenance]]:
    """(the event behind each chip's current state, its latest dry-run event) per chip."""
    from sdc.store.reader import quarantine_events

    events = quarantine_events(engine)

    def provenance(e, is_dry: bool) -> Provenance:
        return Provenance(
            e.actor, e.at, e.from_state, e.to_state, e.reason, is_dry, e.verdict_id, is_breaker_hold(e.details), is_replaced(e.details)
        )

    applied = {chip: provenance(s.event, False) for chip, s in current_states(events).items()}
    dry = {e.chip_id: provenance(e, True) for e in events if is_dry_run(e.details)}
    return applied, dry


def _latest_verdicts(engine: Engine, chip_ids: Iterable[str] | None = None) -> dict[str, list[VerdictView]]:
    """Per chip, its verdicts of the fleet's latest analysis (``sdc.quarantine.latest``, also
    one that found nothing): a verdict an older analysis gave and the latest did not repeat no
    longer counts."""
    t = VerdictRow.__table__
    query = select(
        t.c.chip_id, t.c.verdict_id, t.c.analysis_id, t.c.kind, t.c.severity, t.c.summary, t.c.k, t.c.n,
        t.c.created_at, t.c.statistic, t.c.p_value, t.c.score, t.c.first_seen, t.c.last_seen,
    ).order_by(t.c.created_at, t.c.verdict_id)
    if chip_ids is not None:
        query = query.where(t.c.chip_id.in_(list(chip_ids)))
    by_chip: dict[str, list[VerdictView]] = defaultdict(list)
    with engine.connect() as conn:
        latest = conn.execute(text(LATEST_ANALYSIS_SQL)).scalar()
        if latest is None:
            return {}
        query = query.where(t.c.analysis_id == latest)
        for row in conn.execute(query):
            by_chip[row[0]].append(VerdictView(*row[1:]))
    return dict(by_chip)


def _results(engine: Engine, chip_id: str) -> list[Any]:
    r, s = ProbeResultRow.__table__, SweepRow.__table__
    query = (
        select(
            r.c.result_id, r.c.sweep_id, r.c.probe, r.c.probe_version, r.c.case, r.c.case_key, r.c.seed, r.c.status,
            r.c.stack_hash, r.c.digest, r.c.reference_digest, r.c.throughput, r.c.throughput_unit, r.c.observed_at,
            r.c.message, s.c.started_at,
        )
        .join(s, s.c.sweep_id == r.c.sweep_id)
        .where(r.c.chip_id == chip_id)
        .order_by(r.c.observed_at)
    )
    with engine.connect() as conn:
        return list(conn.execute(query))


def _case_label(case: dict[str, Any]) -> str:
    name = str(case.get("name", "case"))
    shape = case.get("shape")
    return f"{name} {'x'.join(str(d) for d in shape)}" if isinstance(shape, (list, tuple)) else name


def _cohort_majority(engine: Engine, probe: str, version: int, case_key: str, seed: int, stack: str) -> str | None:
    t = ProbeResultRow.__table__
    query = (
        select(t.c.digest, func.count().label("n"))
        .where(
            t.c.probe == probe, t.c.probe_version == version, t.c.case_key == case_key, t.c.seed == seed,
            t.c.stack_hash == stack, t.c.digest.is_not(None),
        )
        .group_by(t.c.digest)
        .order_by(func.count().desc(), t.c.digest)
        .limit(1)
    )
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return row[0] if row else None


def _evidence(engine: Engine, rows: list[Any], evidence_ids: set[str]) -> tuple[CaseEvidence, ...]:
    chosen = [r for r in rows if r.result_id in evidence_ids] or [r for r in rows if r.status == "mismatch"]
    groups: dict[tuple, list[Any]] = defaultdict(list)
    for r in chosen:
        groups[(r.probe, r.probe_version, r.case_key, r.seed, r.stack_hash)].append(r)
    out = []
    for (probe, version, case_key, seed, stack), group in groups.items():
        last = group[-1]
        # What a healthy chip gives: the cohort majority, as the analysis compares. The fp64
        # reference's digest never equals a low-precision output, so it is shown only when
        # the cohort has no digest at all.
        expected = _cohort_majority(engine, probe, version, case_key, seed, stack) or last.reference_digest
        out.append(
            CaseEvidence(
                probe=probe,
                case=_case_label(last.case),
                dtype=str(last.case.get("dtype", "")),
                seed=seed,
                status=last.status,
                expected_digest=expected,
                observed_digest=last.digest,
                first_seen=group[0].observed_at,
                last_seen=last.observed_at,
                occurrences=len(group),
                reproduced=len({r.sweep_id for r in group}) > 1,
                message=last.message or "",
            )
        )
    out.sort(key=lambda e: (e.probe, e.case, e.dtype, e.seed))
    return tuple(out)


def _throughput(engine: Engine, identity: Identity, rows: list[Any]) -> Throughput | None:
    with_tp = [r for r in rows if r.throughput is not None]
    if not with_tp:
        return None
    (probe, case_key), _ = Counter((r.probe, r.case_key) for r in with_tp).most_common(1)[0]
    mine = [r for r in with_tp if r.probe == probe and r.case_key == case_key]
    r, c = ProbeResultRow.__table__, ChipRow.__table__
    query = (
        select(r.c.throughput)
        .join(c, c.c.chip_id == r.c.chip_id)
        .where(
            r.c.probe == probe, r.c.case_key == case_key, c.c.model == identity.model,
            r.c.chip_id != identity.chip_id, r.c.throughput.is_not(None),
        )
        .order_by(r.c.observed_at.desc())
        .limit(COHORT_SAMPLE_LIMIT)
    )
    with engine.connect() as conn:
        cohort = tuple(float(v) for (v,) in conn.execute(query))
    return Throughput(
        probe=probe,
        case=f"{_case_label(mine[-1].case)} {mine[-1].case.get('dtype', '')}".strip(),
        unit=mine[-1].throughput_unit or "",
        chip=tuple(float(x.throughput) for x in mine),
        cohort=cohort,
    )


def _over_time(rows: list[Any]) -> tuple[tuple[datetime, int], ...]:
    per_sweep: dict[str, list] = {}
    for r in rows:
        entry = per_sweep.setdefault(r.sweep_id, [r.started_at, 0])
        entry[1] += r.status == "mismatch"
    return tuple(sorted((at, n) for at, n in per_sweep.values()))


def _failures(rows: list[Any]) -> tuple[tuple[str, str, int], ...]:
    counts = Counter((r.probe, str(r.case.get("dtype", ""))) for r in rows if r.status == "mismatch")
    return tuple(sorted((p, d, n) for (p, d), n in counts.items()))


def _last_sweep(engine: Engine) -> datetime | None:
    t = SweepRow.__table__
    with engine.connect() as conn:
        return conn.execute(select(func.max(t.c.started_at)).where(t.c.status == "complete")).scalar()


def build_report(engine: Engine, source: str = "", now: datetime | None = None, hosts: Iterable[str] | None = None) -> FleetReport:
    """Read the store and assemble the report (for ``hosts`` only, if given)."""
    generated_at = now or utcnow()
    identities = _identities(engine)
    applied, dry = latest_events(engine)
    verdicts = _latest_verdicts(engine)
    # Chips known only from verdicts or events (ingested from elsewhere) still appear.
    for chip_id in set(applied) | set(dry) | set(verdicts):
        identities.setdefault(chip_id, Identity(chip_id, "unknown", -1, "unknown", "unknown"))
    wanted = set(hosts) if hosts else None
    chips = []
    for chip_id in sorted(identities, key=lambda c: (identities[c].host, identities[c].index, c)):
        ident = identities[chip_id]
        if wanted is not None and ident.host not in wanted:
            continue
        event = applied.get(chip_id)
        state = event.to_state if event else "healthy"
        proposal = dry.get(chip_id)
        if proposal and event and proposal.at < event.at:
            proposal = None  # an applied transition came after the dry run
        views = tuple(verdicts.get(chip_id, ()))
        # After a release only verdicts on newer evidence flag the chip (and make the report exit 1).
        views = tuple(v for v in views if reaches_past_decision(state, event.at if event else None, v.last_seen, generated_at))
        proposed = bool(proposal) and state in ("healthy", "released")
        action = recommend(
            chip_id, ident.host, ident.index, ident.vendor, proposal.to_state if proposed else state, [v.severity for v in views]
        )
        if event and event.replaced:
            action = Action("none", "replaced: the chip has left the machine")
        if proposed and action.kind != "none":
            action = replace(action, why=f"if the dry run is applied: {action.why}")
        report = ChipReport(
            identity=ident,
            state=state,
            action=action,
            proposed_state=proposal.to_state if proposal else None,
            provenance=proposal or event,
            verdicts=views,
        )
        if report.flagged:
            report = _with_evidence(engine, report)
        chips.append(report)
    from sdc.reports.precision import read_precision

    return FleetReport(generated_at=generated_at, source=source, chips=tuple(chips), last_sweep_at=_last_sweep(engine),
                       precision=read_precision(engine))


def _with_evidence(engine: Engine, report: ChipReport) -> ChipReport:
    evidence_ids: set[str] = set()
    t = VerdictRow.__table__
    ids = [v.verdict_id for v in report.verdicts]
    if ids:
        with engine.connect() as conn:
            for (listed,) in conn.execute(select(t.c.evidence_ids).where(t.c.verdict_id.in_(ids))):
                evidence_ids.update(listed or ())
    rows = _results(engine, report.identity.chip_id)
    return replace(
        report,
        evidence=_evidence(engine, rows, evidence_ids),
        throughput=_throughput(engine, report.identity, rows),
        mismatches_over_time=_over_time(rows),
        failures=_failures(rows),
    )
