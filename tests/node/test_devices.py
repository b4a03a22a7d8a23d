"""Chip discovery on a CPU-only machine: virtual CPU chips for tests, clear errors for bad names."""

import pytest

from sdc.node.devices import DeviceError, discover


def test_virtual_cpu_chips_are_distinct_chips_of_one_cohort():
    chips = discover("cpu:0,cpu:1,cpu:3")
    assert [c.name for c in chips] == ["cpu:0", "cpu:1", "cpu:3"]
    assert len({c.chip.chip_id for c in chips}) == 3
    assert all(c.chip.chip_id.startswith("host:") for c in chips), "positional ids are marked as such"
    assert len({(c.chip.model, c.chip.stack_hash) for c in chips}) == 1
    assert discover("cpu:1")[0].chip.chip_id == chips[1].chip.chip_id, "stable across calls"


def test_default_discovery_without_accelerators_is_the_cpu():
    (chip,) = discover()
    assert chip.device.type == "cpu"


@pytest.mark.parametrize("spec, words", [("gpu:0", "not a PyTorch device type"), ("cuda 0", "BACKEND:INDEX"), ("cuda:7", "this machine has 0 cuda")])
def test_bad_device_names_say_what_is_wrong(spec, words):
    with pytest.raises(DeviceError, match=words):
        discover(spec)
