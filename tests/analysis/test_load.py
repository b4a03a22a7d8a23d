"""The production loader on SQLite and PostgreSQL: hostile strings and large counts load intact.

A record may carry any character in any string field; the loader must not let one value
shift its neighbours or stop the analysis (issue 14, item 0). Counts beyond int16 (a burn
of 36,000 iterations) must load as they are (issue 12, item 5).
"""

import dataclasses

import numpy as np
import pytest
from sqlalchemy.orm import Session

from sdc.analysis.config import AnalysisConfig
from sdc.analysis.ledger import analyze
from sdc.analysis.load import load_evidence
from sdc.records import Chip, ProbeResult, Sweep
from sdc.store.engine import make_engine
from sdc.store.models import ChipRow, ProbeResultRow, SweepRow

from .helpers import DAY, R, build, fleet, records

HOSTILE = ["\x1e", "\x1f", "\x1e\x1f", ",", ":", "3:", "12:x", "''", "é\u2028", "\\", "%", "\t"]


def insert_raw(url: str, recs: list) -> None:
    """Rows straight into the tables, as an older sdc or another tool might have left them."""
    engine = make_engine(url)
    with Session(engine) as session:
        for kind, row in ((Chip, ChipRow), (Sweep, SweepRow), (ProbeResult, ProbeResultRow)):  # parents first
            extra = (lambda r: {"case_key": r.case_key}) if kind is ProbeResult else (lambda r: {})
            session.add_all([row(**dataclasses.asdict(r), **extra(r)) for r in recs if isinstance(r, kind)])
            session.flush()
        session.commit()
    engine.dispose()


def hostile(text: str, i: int) -> str:
    return f"{HOSTILE[i % len(HOSTILE)]}{text}{HOSTILE[(i + 5) % len(HOSTILE)]}"


@pytest.mark.parametrize("field", ["chip", "digest", "probe", "stack", "case"])
def test_separators_and_odd_characters_in_any_field_change_no_verdict(migrated_url, field):
    # 16 chips on two hosts, one persistently wrong (c05); the same fleet with hostile strings
    # in one field must load to the same columns and the same verdict, on the same chip.
    def bad(r):
        return dataclasses.replace(r, digest=f"bad-{r.case}-{r.sweep}") if r.chip == "c05" else r

    plain = fleet(16, sweeps=3, overrides={"c05": bad})
    names = {f"c{i:02d}": hostile(f"c{i:02d}", i) for i in range(16)}

    def spoil(r: R, i: int) -> R:
        if field == "chip":
            return dataclasses.replace(r, chip=names[r.chip])
        if field == "digest":
            return dataclasses.replace(r, digest=hostile(r.digest, i))
        if field == "probe":
            return dataclasses.replace(r, probe=hostile("gemm", 0))
        if field == "stack":
            return dataclasses.replace(r, stack=hostile("st", 1))
        return dataclasses.replace(r, case=hostile(r.case, 2))

    # The same hostile text for equal plain values, so cohorts stay what they were.
    spoilt = []
    digest_names: dict[str, str] = {}
    for r in plain:
        key = r.digest
        s = spoil(r, len(digest_names) if key not in digest_names else list(digest_names).index(key))
        digest_names.setdefault(key, s.digest)
        spoilt.append(s)
    hosts = {c: f"node{int(c[1:]) // 8}" for c in names}
    expected = build(plain, hosts={c: h for c, h in hosts.items()})
    insert_raw(migrated_url, records(spoilt, hosts={names[c] if field == "chip" else c: h for c, h in hosts.items()}))
    got = load_evidence(make_engine(migrated_url))

    assert got.n_results == expected.n_results == len(plain)
    order_e, order_g = np.lexsort((expected.cohort, expected.chip)), np.lexsort((got.cohort, got.chip))
    for column in ("status", "repeats", "distinct", "throughput"):
        assert np.array_equal(getattr(got, column)[order_g], getattr(expected, column)[order_e]), column
    assert len(set(got.cohort)) == len(set(expected.cohort)) and len(set(got.digest)) == len(set(expected.digest))
    now = 3 * DAY
    found_e, ids_e = analyze(expected, AnalysisConfig(), now)
    found_g, ids_g = analyze(got, AnalysisConfig(), now)
    assert [(ids_e[f.chip], f.kind, f.severity) for f in found_e] == [("c05", "wrong", "high")]
    flagged = [(ids_g[f.chip], f.kind, f.severity) for f in found_g]
    assert flagged == [(names["c05"] if field == "chip" else "c05", "wrong", "high")]


def test_a_burn_of_36000_iterations_loads_as_36000_not_as_a_negative_int16(migrated_url):
    results = [R(chip=f"c{i:02d}", sweep=s, case="burn", repeats=36_000) for i in range(6) for s in range(2)]
    results[0] = dataclasses.replace(results[0], repeats=40_000, distinct=33_000, status="mismatch")
    results[1] = dataclasses.replace(results[1], distinct=20_000, status="mismatch")
    got = build(results, url=migrated_url)
    assert sorted(got.repeats.tolist()) == [36_000] * 11 + [40_000]
    assert sorted(got.distinct.tolist())[-2:] == [20_000, 33_000]
    # The chip whose burn gave 33,000 distinct outputs is inconsistent: its evidence counts.
    found, ids = analyze(got, AnalysisConfig(), 2 * DAY)
    assert {(ids[f.chip], f.kind) for f in found} == {("c00", "inconsistent")}
