"""Device-event timings against wall-clock, on the probes' own GEMM shapes.

The probes time accelerators with device events on the probe's stream (``DeviceTimer``),
because wall-clock around a synchronize also counts launch latency and the host: a small
GEMM (17x301x129, ~0.02 ms on an H200) is mostly launch. This prints, per shape, the best of
``--repeats`` runs timed both ways in the same run, their ratio (wall / device), and whether
the case is launch-bound (device time under the floor the slow analysis leaves out).

On the CPU both clocks are the wall clock (the ratio is ~1 and says nothing about devices).

Run: ``.venv/bin/python benchmarks/bench_timing.py [--device cuda:0]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from probes.base import Case
from probes.gemm import host_inputs, matmul
from probes.harness import LAUNCH_BOUND_S, DeviceTimer, synchronize

SHAPES = [(17, 301, 129), (256, 256, 256), (1024, 1024, 1024), (4096, 4096, 4096)]


def best_device_and_wall(device: torch.device, shape: tuple[int, int, int], dtype: str, repeats: int) -> tuple[float, float, str]:
    a_host, b_host = host_inputs(Case("square", shape, dtype), 0)
    a, b = a_host[0].to(device), b_host[0].to(device)
    matmul(a, b, dtype)  # warm the kernels
    synchronize(device)
    timer = DeviceTimer(device)
    best_device = best_wall = float("inf")
    for _ in range(repeats):
        timer.start()
        matmul(a, b, dtype)
        best_device = min(best_device, timer.stop())
        synchronize(device)
        start = time.perf_counter()
        matmul(a, b, dtype)
        synchronize(device)
        best_wall = min(best_wall, time.perf_counter() - start)
    return best_device, best_wall, timer.clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", help="a GEMM probe dtype: fp32, tf32, bf16, fp16 ...")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, dtype {args.dtype}, best of {args.repeats}; launch-bound floor {LAUNCH_BOUND_S * 1e6:.0f} us")
    print(f"{'shape':>16} {'clock':>7} {'device ms':>10} {'wall ms':>10} {'wall/device':>11}  launch-bound")
    for shape in SHAPES:
        if device.type == "cpu" and shape[0] > 1024:
            continue  # minutes on a 2-core host, and the CPU has no device clock to compare
        dev_s, wall_s, clock = best_device_and_wall(device, shape, args.dtype, args.repeats)
        bound = "yes" if clock == "device" and dev_s < LAUNCH_BOUND_S else "no"
        print(f"{'x'.join(map(str, shape)):>16} {clock:>7} {dev_s * 1e3:10.4f} {wall_s * 1e3:10.4f} {wall_s / dev_s:11.2f}  {bound}")


if __name__ == "__main__":
    main()
