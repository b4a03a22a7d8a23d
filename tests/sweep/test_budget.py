"""--budget: probes that found faults in this fleet first, then coverage, within the time given."""

from click.testing import CliRunner

from sdc.cli import cli
from sdc.sweep.budget import select_within_budget

WORK = [("gemm", 1), ("gemm", 2), ("gemm", 3), ("memory", 1), ("norms", 1), ("norms", 2)]


def _select(budget, faults, cost=lambda item: 1.0):
    return select_within_budget(WORK, budget, lambda item: item[0], cost, faults)


def test_without_fault_history_every_family_comes_before_any_second_case():
    assert _select(3, {}) == [("gemm", 1), ("memory", 1), ("norms", 1)]


def test_probes_that_found_faults_come_first_with_all_their_cases():
    assert _select(3, {"norms": 5, "memory": 1}) == [("norms", 1), ("norms", 2), ("memory", 1)]


def test_cases_that_do_not_fit_are_passed_over():
    cost = {("gemm", 1): 10.0}
    chosen = _select(2.5, {}, cost=lambda item: cost.get(item, 1.0))
    assert ("gemm", 1) not in chosen and len(chosen) == 2
    assert _select(100, {}) and len(_select(100, {})) == len(WORK)


def test_sweep_with_budget_runs_the_probe_with_most_faults(sdc_env, migrated_url):
    from sdc.node.devices import discover
    from sdc.records import ProbeResult, Sweep, new_id, utcnow
    from sdc.store import Store

    store = Store(migrated_url)
    (chip,) = discover("cpu:5")
    sweep = Sweep(new_id(), "elsewhere", "quick", utcnow(), "complete", "0")
    past = [
        ProbeResult(new_id(), sweep.sweep_id, chip.chip.chip_id, "memory", 1, {"name": "patterns"}, 0, "mismatch",
                    chip.chip.stack_hash, 3, 1, [0.1], utcnow())
        for _ in range(3)
    ]
    store.write([chip.chip, sweep, *past])
    store.dispose()
    result = CliRunner().invoke(
        cli, ["--json", "sweep", "--db", migrated_url, "--devices", "cpu:0", "--budget", "0.3", "--probes", "gemm,memory"]
    )
    assert result.exit_code == 0, result.output
    import json

    statuses = json.loads(result.output)["chips"][0]["statuses"]
    # Memory has found faults before, so it runs; the budget leaves no room for all of gemm.
    assert statuses.get("ok", 0) >= 1
    store = Store(migrated_url)
    from sdc.store.reader import iter_records

    ran = [r.probe for r in iter_records(store.engine(), kinds=("probe_result",)) if r.sweep_id != sweep.sweep_id]
    store.dispose()
    assert ran[0] == "memory" and 0 < ran.count("gemm") < 7
