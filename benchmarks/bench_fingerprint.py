"""Digest throughput against torch.sum over the same 256 MB tensor (fp32 and bf16).

Prints GB/s for torch.sum, the fast digest (``sdc.fingerprint.digest_sums``: the native
kernel on the CPU, the compiled kernel on an accelerator) and the eager reference, and the
ratio digest / torch.sum measured in this run (target >= 0.9).

    .venv/bin/python benchmarks/bench_fingerprint.py [--device cuda] [--mbytes 256]
"""

from __future__ import annotations

import argparse
import time

import torch

from sdc.fingerprint import digest_sums, eager_digest_sums


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_seconds(fn, device: torch.device, repeats: int) -> float:
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    # Interleaving is done by the caller; the minimum is the least-disturbed run on a shared machine.
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--mbytes", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--eager", action="store_true", help="also time the eager reference (slow)")
    args = parser.parse_args()
    device = torch.device(args.device)
    nbytes = args.mbytes << 20
    print(f"device {device}, {args.mbytes} MB, torch threads {torch.get_num_threads()}")
    ratios = {}
    for dtype in (torch.float32, torch.bfloat16):
        n = nbytes // torch.empty((), dtype=dtype).element_size()
        x = torch.randn(n, device=device).to(dtype)
        # Alternate the two measurements so a noisy neighbour hurts both alike.
        sums, digests = [], []
        for _ in range(3):
            sums.append(best_seconds(lambda: x.sum(), device, args.repeats))
            digests.append(best_seconds(lambda: digest_sums(x), device, args.repeats))
        t_sum, t_digest = min(sums), min(digests)
        ratio = t_sum / t_digest
        ratios[str(dtype)] = ratio
        line = f"{str(dtype):15s} torch.sum {nbytes / t_sum / 1e9:7.1f} GB/s  digest {nbytes / t_digest / 1e9:7.1f} GB/s  ratio {ratio:.2f}"
        if args.eager:
            t_eager = best_seconds(lambda: eager_digest_sums(x), device, 2)
            line += f"  eager {nbytes / t_eager / 1e9:6.2f} GB/s"
        print(line)
    verdict = "met" if min(ratios.values()) >= 0.9 else "NOT met"
    print(f"target digest/sum >= 0.9: {verdict} (min ratio {min(ratios.values()):.2f})")


if __name__ == "__main__":
    main()
