"""The analysis's evidence read from the store: probe results as columns, job events, throttle reasons.

Reading two million probe results must stay well under 30 s and 2 GB, so the database
does the string work (integer codes for chips, sweeps and cases via temporary tables), rows
stream in partitions into numpy arrays, and the time of a result is its sweep's start, so no
per-row datetime is parsed.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Iterable, Sequence

import numpy as np
from sqlalchemy import Engine, select, text

from sdc.analysis.evidence import NO_DIGEST, Encoder, Evidence, JobEvidence
from sdc.analysis.stats import unique_inverse
from sdc.store.models import ChipRow, JobEventRow, ProbeResultRow, SweepRow

PARTITION = 50_000


GROUPS_PER_PARTITION = 500
US, RS = "\x1f", "\x1e"  # unit and record separators: never inside ids, JSON keys or digests


def load_evidence(engine: Engine, since: datetime | None = None) -> Evidence:
    """Probe results of complete sweeps (observed at or after ``since``) as columns.

    Turning millions of database values into Python objects is what costs, so the database
    packs each sweep — a host's chips times the suite's cases — into one row of concatenated
    fields (walking the sweep index, no sort), and numpy parses the numbers in bulk. Result ids stay in the store; they are looked up
    for the few results a verdict names (``result_ids_for``).
    """
    with engine.connect() as connection:
        chips = connection.execute(select(ChipRow.chip_id, ChipRow.host, ChipRow.model).order_by(ChipRow.chip_id)).all()
        sweeps = connection.execute(
            select(SweepRow.sweep_id, SweepRow.started_at).where(SweepRow.status == "complete").order_by(SweepRow.sweep_id)
        ).all()
        query = _packed_query(connection.dialect.name, since is not None)
        params = {"since": since} if since is not None else {}
        result = connection.execute(query.execution_options(stream_results=True, yield_per=GROUPS_PER_PARTITION), params)
        return _unpack(chips, sweeps, result.partitions(GROUPS_PER_PARTITION))


def _packed_query(dialect: str, with_since: bool):
    if dialect == "postgresql":
        def agg(expr: str, sep: str) -> str:
            return f"string_agg({expr}, {sep} ORDER BY result_id)"

        key = ("probe || chr(31) || probe_version::text || chr(31) || case_key || chr(31) || stack_hash || chr(31) || seed::text")
        fields = [
            agg("chip_id", "chr(30)"), agg(key, "chr(30)"), agg("coalesce(digest, '')", "chr(30)"),
            agg("CASE WHEN status = 'mismatch' THEN '1' ELSE '0' END", "','"), agg("repeats::text", "','"),
            agg("distinct_repeat_digests::text", "','"), agg("coalesce(throughput::text, 'nan')", "','"),
        ]
    else:
        def agg(expr: str, sep: str) -> str:
            return f"group_concat({expr}, {sep})"

        key = "probe || char(31) || probe_version || char(31) || case_key || char(31) || stack_hash || char(31) || seed"
        fields = [
            agg("chip_id", "char(30)"), agg(key, "char(30)"), agg("coalesce(digest, '')", "char(30)"),
            agg("CASE WHEN status = 'mismatch' THEN 1 ELSE 0 END", "','"), agg("repeats", "','"),
            agg("distinct_repeat_digests", "','"), agg("coalesce(throughput, 'nan')", "','"),
        ]
    where = "status IN ('ok', 'mismatch')" + (" AND observed_at >= :since" if with_since else "")
    return text(
        f"SELECT sweep_id, {', '.join(fields)} FROM probe_results WHERE {where} GROUP BY sweep_id"
    )


def _unpack(chips, sweeps, partitions) -> Evidence:
    chip_code = {c: i for i, (c, _, _) in enumerate(chips)}
    sweep_code = {s: i for i, (s, _) in enumerate(sweeps)}
    case_enc, digest_enc = Encoder(), Encoder()
    digest_enc.codes[""] = NO_DIGEST
    cols: dict[str, list[np.ndarray]] = {n: [] for n in ("chip", "sweep", "case", "status", "digest", "repeats", "distinct", "throughput")}
    for groups in partitions:
        # Only complete sweeps are evidence; a sweep not in the table is not complete.
        groups = [g for g in groups if g[0] in sweep_code]
        if not groups:
            continue
        sweep_id, chip_ids, keys, digests, status, repeats, distinct, throughput = zip(*groups)
        chips_of_rows = [RS.join(chip_ids).split(RS)]
        counts = np.asarray([c.count(RS) + 1 for c in chip_ids], dtype=np.int64)
        cols["chip"].append(np.asarray([chip_code.get(c, -1) for c in chips_of_rows[0]], dtype=np.int32))
        cols["sweep"].append(np.repeat(np.asarray([sweep_code[s] for s in sweep_id], dtype=np.int32), counts))
        cols["case"].append(np.asarray(case_enc.many(RS.join(keys).split(RS)), dtype=np.int32))
        codes = digest_enc.codes
        cols["digest"].append(np.asarray([codes[d] if d in codes else codes.setdefault(d, len(codes) - 1) for d in RS.join(digests).split(RS)], dtype=np.int32))
        for name, values, dtype in (("status", status, np.int8), ("repeats", repeats, np.int16), ("distinct", distinct, np.int16), ("throughput", throughput, np.float64)):
            cols[name].append(np.array(",".join(values).split(","), dtype=np.float64).astype(dtype) if name != "throughput"
                              else np.array(",".join(values).split(","), dtype=np.float64))
    dtypes = {"chip": np.int32, "sweep": np.int32, "case": np.int32, "status": np.int8, "digest": np.int32, "repeats": np.int16, "distinct": np.int16, "throughput": np.float64}
    arrays = {n: np.concatenate(v) if v else np.zeros(0, dtype=dtypes[n]) for n, v in cols.items()}
    known = arrays["chip"] >= 0  # a result of a chip missing from the chips table cannot be placed
    if not known.all():
        arrays = {n: v[known] for n, v in arrays.items()}
    cases = [tuple(key.split(US)) for key in case_enc.labels()]
    # (probe, version, case_key, stack, seed) as strings from the packed key.
    return _assemble(chips, sweeps, cases, arrays)


def _assemble(chips, sweeps, cases, a) -> Evidence:
    chip, case = a["chip"], a["case"]
    host_enc, model_enc = Encoder(), Encoder()
    chip_host = np.asarray(host_enc.many(h for _, h, _ in chips), dtype=np.int32)
    chip_model = np.asarray(model_enc.many(m for _, _, m in chips), dtype=np.int32)
    n_models = max(1, len(model_enc.codes))
    # Cohort = (probe, version, case, stack, seed) x chip model; the slow cohort drops the seed.
    slow_enc = Encoder()
    case_slow = np.asarray(slow_enc.many(c[:4] for c in cases), dtype=np.int64)
    model = chip_model[chip].astype(np.int64)
    cohort_keys, cohort, _ = unique_inverse(case.astype(np.int64) * n_models + model)
    slow_cohort = unique_inverse(case_slow[case] * n_models + model)[1] if case.size else np.zeros(0, np.int64)
    return Evidence(
        chip_ids=np.asarray([c for c, _, _ in chips], dtype=object),
        chip_host=chip_host,
        chip_model=chip_model,
        sweep_ids=np.asarray([sw for sw, _ in sweeps], dtype=object),
        sweep_time=np.asarray([t.timestamp() for _, t in sweeps], dtype=np.float64),
        chip=chip,
        sweep=a["sweep"],
        cohort=cohort.astype(np.int32),
        slow_cohort=slow_cohort.astype(np.int32),
        status=a["status"],
        digest=a["digest"],
        repeats=a["repeats"],
        distinct=a["distinct"],
        throughput=a["throughput"],
        result_id=np.zeros(0, dtype="S1"),
        cohort_labels=[_case_label(cases[int(key // n_models)]) for key in cohort_keys],
        probe_case=case,
        probe_case_keys=[(p, int(v), k, int(seed)) for p, v, k, _stack, seed in cases],
    )


def _case_label(case) -> str:
    probe, case_key = case[0], case[2]
    try:
        value = json.loads(case_key)
        return f"{probe}/{value.get('name', '?')} {value.get('dtype', '')}".strip()
    except (ValueError, AttributeError):
        return str(probe)


def result_ids_for(engine: Engine, ev: Evidence, rows: np.ndarray) -> list[str]:
    """The stored result ids of evidence rows (looked up by chip, sweep and case)."""
    if ev.probe_case is None:
        return [r.decode() if isinstance(r, bytes) else str(r) for r in ev.result_id[rows]]
    t = ProbeResultRow.__table__
    wanted: dict[tuple, list[int]] = {}
    for i in rows:
        key = (ev.chip_ids[ev.chip[i]], ev.sweep_ids[ev.sweep[i]], *ev.probe_case_keys[ev.probe_case[i]])
        wanted.setdefault(key[:2], []).append(int(i))
    found: dict[tuple, str] = {}
    with engine.connect() as connection:
        by_chip: dict[str, set[str]] = {}
        for chip, sweep in wanted:
            by_chip.setdefault(chip, set()).add(sweep)
        for chip, sweeps in by_chip.items():
            query = select(t.c.result_id, t.c.sweep_id, t.c.probe, t.c.probe_version, t.c.case_key, t.c.seed).where(
                t.c.chip_id == chip, t.c.sweep_id.in_(sorted(sweeps))
            )
            for result_id, sweep, *case in connection.execute(query):
                found[(chip, sweep, *case)] = result_id
    out = []
    for i in rows:
        key = (ev.chip_ids[ev.chip[i]], ev.sweep_ids[ev.sweep[i]], *ev.probe_case_keys[ev.probe_case[i]])
        if key in found:
            out.append(found[key])
    return out


def load_job_events(engine: Engine, since: datetime | None = None) -> JobEvidence:
    """Training-job events that report a replica disagreement (``is_disagreement``, in SQL)."""
    from sdc.analysis.inconsistent import BLAMING, CHECK_KINDS

    t = JobEventRow.__table__
    query = select(t.c.event_id, t.c.job_id, t.c.step, t.c.rank, t.c.kind, t.c.diagnosis, t.c.chip_id, t.c.observed_at, t.c.details)
    # 'ok' checks are the bulk of a job's events; the database drops them before Python sees them.
    query = query.where(t.c.kind.like("%mismatch") | t.c.kind.in_(CHECK_KINDS)).where(t.c.diagnosis.in_(BLAMING))
    if since is not None:
        query = query.where(t.c.observed_at >= since)
    jobs = JobEvidence()
    with engine.connect() as connection:
        for event_id, job_id, step, rank, kind, diagnosis, chip_id, at, details in connection.execute(query):
            jobs.add(event_id, job_id, step, rank, kind, diagnosis, chip_id, at.timestamp(), details)
    return jobs


def fleet_size(engine: Engine) -> int:
    from sqlalchemy import func

    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(ChipRow.__table__)).scalar_one())


def throttle_reasons(engine: Engine, result_ids: Sequence[str]) -> Counter:
    """Throttle reasons recorded in the telemetry of these results (``throttle_reasons`` lists)."""
    t = ProbeResultRow.__table__
    reasons: Counter = Counter()
    ids = list(result_ids)
    with engine.connect() as connection:
        for start in range(0, len(ids), 500):
            query = select(t.c.telemetry).where(t.c.result_id.in_(ids[start : start + 500]))
            for (telemetry,) in connection.execute(query):
                for reason in _reasons(telemetry):
                    reasons[reason] += 1
    return reasons


def _reasons(telemetry) -> Iterable[str]:
    if not isinstance(telemetry, dict):
        return ()
    value = telemetry.get("throttle_reasons") or telemetry.get("throttle") or ()
    if isinstance(value, str):
        return (value,)
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else ()
