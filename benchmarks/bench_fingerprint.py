"""Digest throughput against torch.sum over the same 256 MB tensor (fp32 and bf16).

Prints GB/s for torch.sum and for the digest as the sentinel and probes call it
(``sdc.digest.digest_sums``: the native kernel on the CPU, the Triton kernel on a GPU),
and the ratio digest / torch.sum measured in this run (target >= 0.9). On a GPU it also
times each accelerator path on its own (Triton, torch.compile, eager, and the naive
``x.view(int).sum(dtype=int64)``) to show what the choice is worth.

GPU timings use device events around back-to-back calls, so they count what the device is
busy for plus any gap the host leaves between launches; CPU timings use the wall clock.

    .venv/bin/python benchmarks/bench_fingerprint.py [--device cuda] [--mbytes 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import sdc.digest.core as fingerprint
from sdc.digest import digest_sums, eager_digest_sums, integer_words
from sdc.digest import triton_kernel as _digest_triton


def cpu_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)  # the least-disturbed run on a shared machine


def gpu_seconds(fn, repeats: int, calls: int = 20) -> float:
    """Median over ``repeats`` of the mean time per call of ``calls`` back-to-back calls."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000 / calls)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--mbytes", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--eager", action="store_true", help="also time the eager reference (slow on the CPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    seconds = (lambda fn: gpu_seconds(fn, args.repeats)) if gpu else (lambda fn: cpu_seconds(fn, args.repeats))
    nbytes = args.mbytes << 20
    name = torch.cuda.get_device_name(device) if gpu else f"{torch.get_num_threads()} torch threads"
    print(f"device {device} ({name}), {args.mbytes} MB, torch {torch.__version__}")
    ratios = {}
    for dtype in (torch.float32, torch.bfloat16):
        n = nbytes // torch.empty((), dtype=dtype).element_size()
        x = torch.randn(n, device=device).to(dtype)
        words = integer_words(x)
        wide = torch.int64
        paths = {"digest": lambda: digest_sums(x)}
        if gpu:
            paths["triton kernel"] = lambda: _digest_triton.word_sums(words)
            paths["torch.compile"] = lambda: fingerprint._compiled_sums(words)
            paths["naive int sum"] = lambda: words.sum(dtype=wide)
        if args.eager or gpu:
            paths["eager"] = lambda: eager_digest_sums(x)
        # Alternate the measurements so a noisy neighbour hurts all alike.
        times: dict[str, list[float]] = {"torch.sum": [], **{k: [] for k in paths}}
        for _ in range(3):
            times["torch.sum"].append(seconds(lambda: x.sum()))
            for key, fn in paths.items():
                times[key].append(seconds(fn))
        best = {k: min(v) for k, v in times.items()}
        ratio = best["torch.sum"] / best["digest"]
        ratios[str(dtype)] = ratio
        print(f"{str(dtype):15s} " + "  ".join(f"{k} {nbytes / t / 1e9:7.1f} GB/s" for k, t in best.items()))
        print(f"{'':15s} ratio digest/torch.sum {ratio:.2f}")
    worst = min(ratios.values())
    print(f"target digest/sum >= 0.9: {'met' if worst >= 0.9 else 'NOT met'} (min ratio {worst:.2f})")


if __name__ == "__main__":
    main()
