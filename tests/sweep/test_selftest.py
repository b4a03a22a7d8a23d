"""The self-check runs on the CPU too (reduced: two virtual chips, the GEMM probe)."""

import io

from sdc.sweep.selftest import run_selftest


def test_selftest_on_cpu_catches_the_injected_fault_and_prints_figures():
    out = io.StringIO()
    figures = run_selftest("cpu:0,cpu:1", "gemm", out=out)
    assert figures["passed"], out.getvalue()
    assert figures["injected_fault_caught"] and figures["other_chips_healthy_during_drill"]
    assert figures["gemm"]["distinct_digests"] == 1 and figures["gemm"]["bare_tflops"] > 0
    text = out.getvalue()
    assert "bare matmul" in text and "caught" in text and "PASSED" in text


def test_the_figures_gemm_is_sized_from_the_measured_rate_not_the_device_type(monkeypatch):
    import torch

    from sdc.sweep import selftest

    accelerator = torch.device("cuda", 0)  # any non-CPU device: only its measured rate matters
    for flops, size in ((1e15, 8192), (1e11, 1024), (1e9, 256)):
        monkeypatch.setattr(selftest, "gemm_flops", lambda device, dtype, flops=flops: flops)
        assert selftest.figure_gemm(accelerator) == (size, "bf16"), flops
    assert selftest.figure_gemm(torch.device("cpu", 0)) == (256, "fp32")
