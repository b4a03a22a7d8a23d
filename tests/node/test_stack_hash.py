"""The stack hash cohorts key on: what changes kernels, not the Python patch release."""

from sdc.node import devices
from sdc.node.devices import cohort_stack_hash, cpu_chip, software_stack


def test_a_python_patch_rollout_keeps_every_chip_in_its_cohort(monkeypatch):
    before = cpu_chip(0).chip
    stack = dict(software_stack("cpu"), python="3.11.99")
    monkeypatch.setattr(devices, "software_stack", lambda backend: stack)
    after = cpu_chip(0).chip
    assert after.stack["python"] == "3.11.99" != before.stack["python"]  # still recorded for people
    assert after.stack_hash == before.stack_hash


def test_what_changes_kernels_changes_the_cohort():
    stack = {"torch": "2.13.0", "python": "3.11.8", "runtime": "cuda 13.0", "driver": "580.1", "blas": "mkl", "cudnn": 91000}
    for key, other in (("torch", "2.13.1"), ("runtime", "cuda 13.1"), ("driver", "580.2"), ("blas", "openblas"), ("cudnn", 91100)):
        assert cohort_stack_hash(dict(stack, **{key: other})) != cohort_stack_hash(stack), key
    assert cohort_stack_hash(dict(stack, python="3.11.9")) == cohort_stack_hash(stack)
