"""Fixtures of stores pre-filled with the fixture fleets of ``tests.fleets`` (reports, hand-offs, agent)."""

from __future__ import annotations

import pytest

from sdc.reports import build_report

from tests import fleets as fleet


def _filled(store, records):
    if records:
        store.write(records)
    return store


@pytest.fixture(params=["empty", "healthy", "faulty"])
def any_fleet(request, store):
    records = {"empty": [], "healthy": fleet.fleet_records(), "faulty": fleet.faulty_fleet()}[request.param]
    return request.param, _filled(store, records)


@pytest.fixture
def faulty_store(store):
    return _filled(store, fleet.faulty_fleet())


@pytest.fixture
def faulty_report(faulty_store):
    return build_report(faulty_store.engine(), source="test")
