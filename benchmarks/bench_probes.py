"""Probe overhead and sweep cost, each as a ratio against a baseline measured in the same run.

1. GEMM probe throughput / bare ``torch.matmul`` on the same shapes (target >= 0.95).
2. Verification cost (digest of the first output, bit comparison of the other repeats,
   judging against the cached fp64 reference) / the probe's compute time, on large GEMMs
   (target <= 0.05).
3. Quick-suite wall time per chip (worker process included), reported.

Run: ``.venv/bin/python benchmarks/bench_probes.py`` (about a minute on a CPU; on a GPU
machine pass ``--device cuda:0`` for the accelerator shapes).
"""

from __future__ import annotations

import argparse
import time

import torch

from probes.base import Case
from probes.gemm import GemmProbe, host_inputs, matmul
from probes.harness import Repeats, bit_equal, synchronize
from sdc.digest import digest
from sdc.sweep.selftest import gemm_figures


def best_of(fn, n: int) -> float:
    best = float("inf")
    for _ in range(n):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def verification_ratio(device: torch.device, size: int, dtype: str, repeats: int = 3) -> dict:
    probe, case = GemmProbe(), Case("square", (size, size, size), dtype)
    a_host, b_host = host_inputs(case, 0)
    a, b = a_host[0].to(device), b_host[0].to(device)
    probe.run(case, device, 0, 1)  # computes and caches the reference, warms the kernels

    def compute():
        out = matmul(a, b, dtype)
        synchronize(device)
        return out

    t_gemm = best_of(compute, repeats)
    out, again = compute(), compute()
    t_digest = best_of(lambda: (digest(out), synchronize(device)), repeats)
    t_compare = best_of(lambda: (bit_equal(out, again), synchronize(device)), repeats)
    result = Repeats(first=out, digests=[digest(out)], timings=[t_gemm] * repeats)
    t_judge = best_of(lambda: probe.judge_output(case, 0, result), repeats)
    verification = t_digest + (repeats - 1) * t_compare + t_judge
    compute_s = repeats * t_gemm
    return {
        "shape": size,
        "dtype": dtype,
        "gemm_s": t_gemm,
        "digest_s": t_digest,
        "compare_s": t_compare,
        "judge_s": t_judge,
        "ratio": verification / compute_s,
        # The same without the digest: what the probe's own comparisons cost.
        "ratio_without_digest": (verification - t_digest) / compute_s,
    }


def quick_suite_per_chip() -> tuple[float, float]:
    """(isolated worker, in-process) wall seconds of the quick suite on one virtual CPU chip."""
    from probes.registry import all_probes
    from sdc.node.devices import discover
    from sdc.sweep import SweepOptions, run_sweep

    chips = discover("cpu:0")
    probes = list(all_probes().values())
    run_sweep(chips, probes[:1], "quick", lambda r: None, options=SweepOptions())  # starts the fork server
    start = time.perf_counter()
    isolated = run_sweep(chips, probes, "quick", lambda r: None, options=SweepOptions())
    isolated_s = time.perf_counter() - start
    start = time.perf_counter()
    run_sweep(chips, probes, "quick", lambda r: None, options=SweepOptions(isolate=False))
    in_process_s = time.perf_counter() - start
    assert isolated.exit_code == 0, isolated.chips[0].failures
    return isolated_s, in_process_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: one virtual CPU chip is one core)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    on_cpu = device.type == "cpu"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")

    print("\n1. GEMM probe / bare torch.matmul (target >= 0.95)")
    # CPU bf16/fp16 GEMMs run at a few GFLOP/s here (no AMX): fp32 only on the CPU.
    shapes = [(256, 50), (512, 10), (1024, 3)] if on_cpu else [(8192, 20)]
    dtypes = ["fp32"] if on_cpu else ["bf16", "fp16", "tf32", "fp32"]
    for dtype in dtypes:
        for size, repeats in shapes:
            g = gemm_figures(device, size, dtype, repeats=repeats)
            print(f"   {dtype:5s} {size:5d}^3  probe {g.probe_tflops:8.4f}  bare {g.bare_tflops:8.4f} TFLOP/s  ratio {g.ratio:.3f}")

    print("\n2. verification cost / compute time on large GEMMs (target <= 0.05)")
    for size, dtype in ([(1024, "fp32"), (2048, "fp32")] if on_cpu else [(8192, "bf16"), (16384, "bf16")]):
        v = verification_ratio(device, size, dtype)
        print(
            f"   {dtype:5s} {size:5d}^3  gemm {v['gemm_s'] * 1e3:8.1f} ms  digest {v['digest_s'] * 1e3:6.1f} ms"
            f"  compare {v['compare_s'] * 1e3:5.1f} ms  judge {v['judge_s'] * 1e3:6.1f} ms  ratio {v['ratio']:.3f}"
            f" (without the digest {v['ratio_without_digest']:.3f})"
        )

    if on_cpu:
        print("\n3. quick suite wall time per CPU chip")
        isolated_s, in_process_s = quick_suite_per_chip()
        print(f"   worker process {isolated_s:.2f} s, in-process {in_process_s:.2f} s (ratio {isolated_s / in_process_s:.2f})")


if __name__ == "__main__":
    main()
