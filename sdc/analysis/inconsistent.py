"""Inconsistent chips: a deterministic kernel that gives different answers when repeated on one
chip, and chips that keep disagreeing with their replicas in training jobs.

Nondeterminism: a result whose repeats gave more than one digest. Counted per chip (over its recent sweeps) and
tested against the fleet background with an exact binomial tail and BH across chips. A cohort
where most chips disagree with themselves runs a kernel that is not deterministic there, and
is left out rather than blamed on every chip.

Replica disagreements (``job_events`` of the sentinel's checks, or any ``*mismatch`` kind, whose
diagnosis says replicas disagreed): the chip blamed is the one named in ``details["suspects"]``
(the sentinel's ``{"rank", "chip_id"}`` entries, chip ids, or ranks of the same job), else the
event's own chip;
its partners are the other chips of the same job and step. A chip blamed in
``job_min_incidents`` disagreements in two or more jobs, or in one job with at least
``job_min_partners`` different partners (chips that were its partner in some of those
incidents but not in all), or
once with diagnosis ``persistent`` (reproduced on replay), is inconsistent. A single
transient disagreement is recorded as low severity and changes no state.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from sdc.analysis.config import AnalysisConfig
from sdc.analysis.evidence import Evidence, JobEvidence
from sdc.analysis.findings import Finding, first_last, rows_by_chip, window_counts
from sdc.analysis.stats import background_test, unique_sorted

# Diagnoses that mean replicas disagreed (``divergence``: a majority named the minority).
BLAMING = ("divergence", "persistent", "transient", "unattributed")
# Event kinds of the sentinel's checks (sdc.sentinel) besides the generic '*mismatch' kinds.
CHECK_KINDS = ("grad_check", "param_check", "local_check", "replay")


def is_disagreement(kind: str, diagnosis: str) -> bool:
    return diagnosis in BLAMING and (kind.endswith("mismatch") or kind in CHECK_KINDS)


def _suspect_chip(suspect, job: str, rank_chip: dict[tuple[str, int], str]) -> str | None:
    """A suspect as the sentinel writes it ({"rank", "chip_id", ...}), a rank, or a chip id."""
    if isinstance(suspect, dict):
        chip = suspect.get("chip_id")
        rank = suspect.get("rank")
        return chip or (rank_chip.get((job, rank)) if isinstance(rank, int) else None)
    if isinstance(suspect, int):
        return rank_chip.get((job, suspect))
    return suspect if isinstance(suspect, str) else None


def find_nondeterministic(ev: Evidence, cfg: AnalysisConfig, now: float) -> list[Finding]:
    rows = np.flatnonzero(ev.evidence_mask() & (ev.repeats >= 2))
    if rows.size == 0:
        return []
    chip = ev.chip[rows]
    nd = ev.distinct[rows] > 1
    # Share of chips per cohort that ever disagreed with themselves.
    cohort = ev.cohort[rows].astype(np.int64)
    n_cohorts = int(cohort.max()) + 1
    n_chip = int(ev.n_chips)
    pairs = unique_sorted(cohort * n_chip + chip)
    chips_per_cohort = np.bincount(pairs // n_chip, minlength=n_cohorts)
    nd_pairs = unique_sorted(cohort[nd] * n_chip + chip[nd])
    nd_per_cohort = np.bincount(nd_pairs // n_chip, minlength=n_cohorts)
    natural = (nd_per_cohort >= 2) & (nd_per_cohort > cfg.nondeterministic_cohort_share * chips_per_cohort)
    keep = ~natural[cohort]
    rows, chip, nd = rows[keep], chip[keep], nd[keep]
    if rows.size == 0:
        return []

    times = ev.sweep_time[ev.sweep[rows]]
    k, n, _inside = window_counts(ev, rows, nd, cfg.evidence_window_sweeps)
    k_raw, n_raw = k, n
    p_value, flagged, p0 = background_test(k, n, np.zeros(n_chip, bool), cfg.nondeterminism_background_floor, cfg.fdr)
    flagged &= k >= 2  # as for wrong results: one disagreement alone is never a verdict
    chosen = np.flatnonzero(flagged)
    by_chip = rows_by_chip(chip[nd], rows[nd], chosen)
    first, last = first_last(chip[nd], times[nd], n_chip) if nd.any() else (None, None)
    findings = []
    for c in chosen:
        chip_rows = by_chip.get(int(c), np.zeros(0, np.int64))
        units = sorted({ev.cohort_labels[i] for i in unique_sorted(ev.cohort[chip_rows])})
        findings.append(
            Finding(
                chip=int(c),
                kind="inconsistent",
                severity="high",
                k=int(k_raw[c]),
                n=int(n_raw[c]),
                summary=(
                    f"is not deterministic: {int(k_raw[c])} of {int(n_raw[c])} results gave different digests "
                    f"on repeats (fleet background {p0:.2g}), on {', '.join(units[:4])}"
                ),
                statistic=float(k[c]),
                p_value=float(p_value[c]),
                rows=chip_rows,
                first_seen=float(first[c]),
                last_seen=float(last[c]),
                details={"source": "repeats", "units": units, "background_rate": p0, "window_sweeps": cfg.evidence_window_sweeps},
            )
        )
    return findings


def find_replica_disagreements(
    jobs: JobEvidence, chip_index: dict[str, int], cfg: AnalysisConfig
) -> tuple[list[Finding], dict[str, int]]:
    """Findings from training-job disagreements; also returns chips not yet in the fleet table.

    ``chip_index`` maps chip ids to codes; chips seen only in jobs are appended to it.
    """
    incidents: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, (kind, diagnosis) in enumerate(zip(jobs.kind, jobs.diagnosis)):
        if is_disagreement(kind, diagnosis):
            incidents[(jobs.job_id[i], jobs.step[i])].append(i)
    rank_chip: dict[tuple[str, int], str] = {}
    for i, chip in enumerate(jobs.chip_id):
        if chip:
            rank_chip[(jobs.job_id[i], jobs.rank[i])] = chip

    blamed: dict[str, dict] = defaultdict(lambda: {"incidents": set(), "partner_sets": [], "jobs": set(), "events": [], "times": [], "persistent": False})
    for (job, step), members in incidents.items():
        suspects: set[str] = set()
        involved: set[str] = set()
        for i in members:
            if jobs.chip_id[i]:
                involved.add(jobs.chip_id[i])
            for s in jobs.details[i].get("suspects", []) or []:
                chip = _suspect_chip(s, job, rank_chip)
                if chip:
                    suspects.add(chip)
            for p in jobs.details[i].get("partners", []) or []:
                chip = _suspect_chip(p, job, rank_chip)
                if chip:
                    involved.add(chip)
        if not suspects:
            suspects = {jobs.chip_id[i] for i in members if jobs.chip_id[i] and jobs.diagnosis[i] != "unattributed"}
        for chip in suspects:
            entry = blamed[chip]
            entry["incidents"].add((job, step))
            entry["jobs"].add(job)
            entry["partner_sets"].append(frozenset(involved - suspects))
            for i in members:
                if jobs.chip_id[i] == chip or not jobs.chip_id[i]:
                    entry["events"].append(jobs.event_id[i])
                    entry["times"].append(jobs.time[i])
                    entry["persistent"] |= jobs.diagnosis[i] == "persistent"
                elif chip in {_suspect_chip(s, job, rank_chip) for s in jobs.details[i].get("suspects") or []}:
                    entry["events"].append(jobs.event_id[i])
                    entry["times"].append(jobs.time[i])

    findings = []
    for chip, entry in sorted(blamed.items()):
        # Different partners: chips that were its partner in some incidents but not in all.
        # With three or more replicas one incident has many partners, and two incidents of
        # one job share them all: that is one set of partners, not many.
        sets = entry["partner_sets"]
        common = frozenset.intersection(*sets) if sets else frozenset()
        differing = frozenset().union(*sets) - common
        n_inc, n_partners = len(entry["incidents"]), len(differing)
        # Recurring: in separate jobs, or in one job next to partners that changed between
        # incidents; the same partners twice in one job are one story, not two.
        recurring = n_inc >= cfg.job_min_incidents and (n_partners >= cfg.job_min_partners or len(entry["jobs"]) >= 2)
        severity = "high" if (recurring or entry["persistent"]) else "low"
        code = chip_index.setdefault(chip, len(chip_index))
        why = (
            "reproduced on replay" if entry["persistent"] else f"in {len(entry['jobs'])} job(s), with {n_partners} partner chip(s) that changed between incidents"
        )
        times = entry["times"] or [0.0]
        findings.append(
            Finding(
                chip=code,
                kind="inconsistent",
                severity=severity,
                k=n_inc,
                n=n_inc,
                summary=f"disagreed with its replicas in training {n_inc} time(s), {why}",
                score=float(n_partners),
                event_ids=sorted(set(entry["events"])),
                first_seen=min(times),
                last_seen=max(times),
                details={"source": "jobs", "incidents": n_inc, "partners": sorted(differing)[:20], "common_partners": sorted(common)[:20], "jobs": sorted(entry["jobs"])[:20], "persistent": entry["persistent"]},
            )
        )
    return findings, chip_index
