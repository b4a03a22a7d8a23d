"""The analysis's evidence read from the store: probe results as columns, job events, throttle reasons.

Reading two million probe results must stay well under 30 s and 2 GB, so the database packs
each sweep's results into one row and numpy parses the numbers in bulk; the time of a result
is its sweep's start, so no per-row datetime is parsed.

No string travels with an in-band separator: a record's strings may hold any character
(ingest accepts them), and one chip id or digest holding the separator must not shift every
later value by a slot. The database hex-encodes every string, so the commas between values
can never occur inside one; only the few distinct values are decoded.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Iterable, Sequence

import numpy as np
from sqlalchemy import Engine, select, text

from sdc.analysis.evidence import NO_DIGEST, STATUS_CODES, Encoder, Evidence, JobEvidence
from sdc.analysis.stats import unique_inverse
from sdc.store.models import ChipRow, JobEventRow, ProbeResultRow, SweepRow

GROUPS_PER_PARTITION = 500
# Results that are loaded: judged ones (evidence of wrong, slow, inconsistent) and the
# errors and timeouts the unreliable test counts; skipped cases say nothing about a chip.
LOADED_STATUSES = ("ok", "mismatch", "error", "timeout")


def load_evidence(engine: Engine, since: datetime | None = None, until: datetime | None = None) -> Evidence:
    """Probe results of complete sweeps (observed at or after ``since``; of sweeps started at
    or before ``until``) as columns.

    Turning millions of database values into Python objects is what costs, so the database
    packs each sweep — a host's chips times the suite's cases — into one row (walking the
    sweep index, no sort), and numpy parses the numbers in bulk. Result ids stay in the
    store; they are looked up for the few results a verdict names (``result_ids_for``).
    """
    with engine.connect() as connection:
        chips = connection.execute(select(ChipRow.chip_id, ChipRow.host, ChipRow.model).order_by(ChipRow.chip_id)).all()
        query = select(SweepRow.sweep_id, SweepRow.started_at).where(SweepRow.status == "complete")
        if until is not None:
            query = query.where(SweepRow.started_at <= until)
        sweeps = connection.execute(query.order_by(SweepRow.sweep_id)).all()
        packed = _packed_query(connection.dialect.name, since is not None)
        params = {"since": since} if since is not None else {}
        result = connection.execute(packed.execution_options(stream_results=True, yield_per=GROUPS_PER_PARTITION), params)
        return _unpack(chips, sweeps, result.partitions(GROUPS_PER_PARTITION))


def _packed_query(dialect: str, with_since: bool):
    """One row per sweep: each field of its results joined by commas, strings hex-encoded.

    Hex has no comma (nor ':'), so no value can shift another whatever characters it holds.
    """
    status = "CASE status " + " ".join(f"WHEN '{s}' THEN {STATUS_CODES[s]}" for s in LOADED_STATUSES) + " END"
    if dialect == "postgresql":
        def agg(expr: str) -> str:
            return f"string_agg({expr}, ',' ORDER BY result_id)"

        def hexed(expr: str) -> str:
            return f"encode(convert_to({expr}, 'UTF8'), 'hex')"

        def num(expr: str) -> str:
            return f"({expr})::text"

        throughput = "coalesce(throughput::text, 'nan')"
    else:
        def agg(expr: str) -> str:
            return f"group_concat({expr}, ',')"

        def hexed(expr: str) -> str:
            return f"hex({expr})"

        def num(expr: str) -> str:
            return expr

        throughput = "coalesce(throughput, 'nan')"
    key = " || ':' || ".join([hexed("probe"), hexed("stack_hash"), hexed("case_key"), num("probe_version"), num("seed")])
    # Aggregates skip NULLs: every expression here is non-NULL, so the fields stay aligned.
    fields = [agg(hexed("chip_id")), agg(key), agg(hexed("coalesce(digest, '')")), agg(num(status)), agg(num("repeats")),
              agg(num("distinct_repeat_digests")), agg(throughput)]
    statuses = ", ".join(f"'{s}'" for s in LOADED_STATUSES)
    where = f"status IN ({statuses})" + (" AND observed_at >= :since" if with_since else "")
    return text(f"SELECT sweep_id, {', '.join(fields)} FROM probe_results WHERE {where} GROUP BY sweep_id")


def _unhex(value: str) -> str:
    return bytes.fromhex(value).decode("utf-8", errors="surrogateescape")


def _case(key: str) -> tuple[str, int, str, str, int]:
    """(probe, version, case_key, stack_hash, seed) from a packed key of the query."""
    probe, stack, case_key, version, seed = key.split(":")
    return _unhex(probe), int(version), _unhex(case_key), _unhex(stack), int(seed)


def _unpack(chips, sweeps, partitions) -> Evidence:
    chip_code: dict[str, int] = {}
    for i, (c, _, _) in enumerate(chips):
        h = c.encode("utf-8", errors="surrogateescape").hex()
        chip_code[h] = chip_code[h.upper()] = i  # PostgreSQL writes hex in lower case, SQLite in upper
    sweep_code = {s: i for i, (s, _) in enumerate(sweeps)}
    case_enc, digest_enc = Encoder(), Encoder()
    digest_enc.codes[""] = NO_DIGEST
    dtypes = {"chip": np.int32, "sweep": np.int32, "case": np.int32, "status": np.int8, "digest": np.int32,
              "repeats": np.int32, "distinct": np.int32, "throughput": np.float64}
    cols: dict[str, list[np.ndarray]] = {n: [] for n in dtypes}
    for groups in partitions:
        # Only complete sweeps are evidence; a sweep not in the table is not complete.
        groups = [g for g in groups if g[0] in sweep_code]
        if not groups:
            continue
        sweep_id, chip_ids, keys, digests, status, repeats, distinct, throughput = zip(*groups)
        counts = np.asarray([c.count(",") + 1 for c in status], dtype=np.int64)
        cols["chip"].append(np.asarray([chip_code.get(c, -1) for c in ",".join(chip_ids).split(",")], dtype=np.int32))
        cols["sweep"].append(np.repeat(np.asarray([sweep_code[s] for s in sweep_id], dtype=np.int32), counts))
        cols["case"].append(np.asarray(case_enc.many(",".join(keys).split(",")), dtype=np.int32))
        codes = digest_enc.codes
        cols["digest"].append(np.asarray([codes[d] if d in codes else codes.setdefault(d, len(codes) - 1)
                                          for d in ",".join(digests).split(",")], dtype=np.int32))
        for name, values in (("status", status), ("repeats", repeats), ("distinct", distinct), ("throughput", throughput)):
            cols[name].append(np.array(",".join(values).split(","), dtype=np.float64).astype(dtypes[name]))
    arrays = {n: np.concatenate(v) if v else np.zeros(0, dtype=dtypes[n]) for n, v in cols.items()}
    known = arrays["chip"] >= 0  # a result of a chip missing from the chips table cannot be placed
    if not known.all():
        arrays = {n: v[known] for n, v in arrays.items()}
    cases = [_case(key) for key in case_enc.labels()]
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
        host_labels=host_enc.labels(),
        model_labels=model_enc.labels(),
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
