"""GPU self-check: does sdc work on this machine? ``python -m sdc.sweep.selftest``

Runs the quick suite on every chip, reruns it with an injected bit flip on the first chip,
and prints figures: the GEMM probe's TFLOP/s against bare ``torch.matmul`` on the same
shape, digest stability over repeats, and whether the injected fault was caught. On a
machine without accelerators it does the same, reduced, on two virtual CPU chips (GEMM
probe only, small shapes), so the command itself is tested everywhere.
Exit code 0 when every check passes, 1 when one fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import torch

from probes.base import Case
from probes.sizing import gemm_flops, is_virtual_cpu
from sdc.exitcodes import ExitCode
from sdc.faults import parse_fault
from sdc.node.devices import ChipHandle, accelerator_backend, discover
from sdc.sweep import SweepOptions, SweepSummary, run_sweep


@dataclass
class GemmFigures:
    shape: tuple[int, int, int]
    dtype: str
    probe_tflops: float
    bare_tflops: float
    ratio: float
    repeats: int
    distinct_digests: int


def bare_matmul_tflops(a: torch.Tensor, b: torch.Tensor, repeats: int) -> float:
    """Best-of-``repeats`` TFLOP/s of plain ``a @ b`` with the same synchronisation as the probe."""
    from probes.harness import synchronize

    best = float("inf")
    for _ in range(repeats):
        synchronize(a.device)
        start = time.perf_counter()
        a @ b
        synchronize(a.device)
        best = min(best, time.perf_counter() - start)
    m, k = a.shape
    return 2.0 * m * b.shape[1] * k / best / 1e12


FIGURE_GEMM_S = 0.05  # one run of the figures' GEMM: long enough that launch latency is noise


def figure_gemm(device: torch.device) -> tuple[int, str]:
    """The square GEMM the figures time: sized from the device's measured bf16 rate (as the
    probes' cases are), not its type, so a slow or emulated accelerator is not handed an
    H200-sized 8192^3 matmul (the largest, on a fast chip) and a fast one times its kernel,
    not its launch. A virtual CPU chip keeps a small fp32 GEMM."""
    if is_virtual_cpu(device):
        return 256, "fp32"
    flops = gemm_flops(device, "bf16")
    size = 8192
    while size > 256 and 2.0 * size**3 / flops > FIGURE_GEMM_S:
        size //= 2
    return size, "bf16"


def gemm_figures(device: torch.device, size: int, dtype: str, repeats: int, seed: int = 0) -> GemmFigures:
    """The GEMM probe against bare matmul on one square shape, interleaved to share conditions."""
    from probes.gemm import GemmProbe, host_inputs
    from sdc.sweep.worker import prepare_process

    prepare_process()
    probe, case = GemmProbe(), Case("square", (size, size, size), dtype)
    a_host, b_host = host_inputs(case, seed)
    a, b = a_host[0].to(device), b_host[0].to(device)
    bare_matmul_tflops(a, b, 2)  # warm-up: kernel selection and caches, for both sides
    probe.run(case, device, seed, 2)
    probe_best, bare_best, distinct = 0.0, 0.0, 1
    for _ in range(3):
        outcome = probe.run(case, device, seed, repeats)
        probe_best = max(probe_best, outcome.throughput or 0.0)
        distinct = max(distinct, outcome.distinct_repeat_digests)
        bare_best = max(bare_best, bare_matmul_tflops(a, b, repeats))
    return GemmFigures((size, size, size), dtype, probe_best, bare_best, probe_best / bare_best, repeats, distinct)


def _sweep(chips: list[ChipHandle], probes, options: SweepOptions) -> tuple[SweepSummary, float]:
    start = time.perf_counter()
    summary = run_sweep(chips, probes, "quick", lambda records: None, options=options)
    return summary, time.perf_counter() - start


def run_selftest(devices: str | None = None, probe_names: str | None = None, out=sys.stdout) -> dict:
    """Run the self-check and return its figures; ``passed`` says whether every check held."""
    from probes.registry import all_probes

    on_accelerator = devices is None and accelerator_backend() is not None
    chips = discover(devices if devices else (None if on_accelerator else "cpu:0,cpu:1"))
    registry = all_probes()
    names = probe_names.split(",") if probe_names else (list(registry) if on_accelerator else ["gemm"])
    probes = [registry[n] for n in names if n in registry and n != "burn"]

    clean, clean_s = _sweep(chips, probes, SweepOptions())
    target = chips[0].name
    faulty, _ = _sweep(chips, probes, SweepOptions(faults=[parse_fault(f"{target}:bitflip:rate=1")]))
    caught = faulty.chips[0].statuses["mismatch"] > 0
    bystanders_clean = all(c.exit_code == ExitCode.HEALTHY for c in faulty.chips[1:])

    device = chips[0].device
    size, dtype = figure_gemm(device)
    gemm = gemm_figures(device, size, dtype, repeats=10 if not is_virtual_cpu(device) else 5)

    figures = {
        "device": str(device),
        "chips": [c.name for c in chips],
        "probes": names,
        "clean_exit_code": int(clean.exit_code),
        "clean_statuses": {c.name: dict(c.statuses) for c in clean.chips},
        "clean_failures": {c.name: c.failures for c in clean.chips if c.failures},
        "quick_suite_s_per_chip": clean_s / max(1, len(chips)),
        "injected_on": target,
        "injected_fault_caught": caught,
        "other_chips_healthy_during_drill": bystanders_clean,
        "gemm": asdict(gemm),
    }
    figures["passed"] = bool(
        clean.exit_code == ExitCode.HEALTHY and caught and bystanders_clean and gemm.distinct_digests == 1
    )
    _print(figures, out)
    return figures


def _print(figures: dict, out) -> None:
    g = figures["gemm"]
    lines = [
        f"sdc self-check on {', '.join(figures['chips'])} (probes: {', '.join(figures['probes'])})",
        f"  quick suite, clean: exit {figures['clean_exit_code']}; {figures['quick_suite_s_per_chip']:.1f} s per chip",
    ]
    for name, statuses in figures["clean_statuses"].items():
        lines.append(f"    {name}: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    for name, failures in figures["clean_failures"].items():
        lines.extend(f"    {name}: {f}" for f in failures)
    lines += [
        f"  injected bitflip on {figures['injected_on']}: {'caught' if figures['injected_fault_caught'] else 'NOT caught'}"
        f"; other chips {'healthy' if figures['other_chips_healthy_during_drill'] else 'NOT healthy'}",
        f"  GEMM {g['dtype']} {g['shape'][0]}^3: probe {g['probe_tflops']:.3f} TFLOP/s, bare matmul {g['bare_tflops']:.3f}"
        f" TFLOP/s, ratio {g['ratio']:.3f}",
        f"  digest stability: {g['distinct_digests']} distinct digest(s) over {g['repeats']} repeats",
        f"  {'PASSED' if figures['passed'] else 'FAILED'}",
    ]
    print("\n".join(lines), file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdc.sweep.selftest", description=__doc__.splitlines()[0])
    parser.add_argument("--devices", help="chips to check (default: every accelerator, else cpu:0,cpu:1)")
    parser.add_argument("--probes", help="probe families (default: all on accelerators, gemm on the CPU)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON as well")
    args = parser.parse_args(argv)
    figures = run_selftest(args.devices, args.probes)
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
    return int(ExitCode.HEALTHY if figures["passed"] else ExitCode.FAULT)


if __name__ == "__main__":
    sys.exit(main())
