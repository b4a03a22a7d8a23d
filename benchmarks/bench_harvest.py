"""Harvest time for a ~100-layer model on the meta device, and the catalog's share of a quick sweep.

Prints ratios against baselines measured in the same run: harvesting 100 layers against
harvesting 1 layer (how harvest time scales), and the catalog sweep's seconds per chip
against the rest of the quick suite on the same chip (the share the catalog takes of a
quick budget; the target is 60 s per GPU in total).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def harvest_seconds(layers: int) -> tuple[float, dict]:
    import transformers

    from probes.harvest_models import harvest_catalog

    config = transformers.LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
                                      num_attention_heads=32, num_key_value_heads=8, vocab_size=32000)
    start = time.perf_counter()
    catalog = harvest_catalog(config, batch=1, seq_len=4096, dtype="bf16", tp_size=2, budget=64)
    return time.perf_counter() - start, catalog


def sweep_seconds(probes, devices: str, catalog: str | None) -> float:
    from sdc.node.devices import discover
    from sdc.sweep.runner import run_sweep
    from sdc.sweep.plan import SweepOptions

    chips = discover(devices)
    for probe in probes:
        if probe.name == "catalog":
            probe.path = catalog or ""
    start = time.perf_counter()
    run_sweep(chips, probes, "quick", lambda records: None, seed=0, repeats=3, options=SweepOptions(seed=0, repeats=3))
    return time.perf_counter() - start


def main() -> None:
    harvest_seconds(1)  # warm imports
    one, _ = harvest_seconds(1)
    hundred, catalog = harvest_seconds(100)
    print(f"harvest, LLaMA 8B-shaped, TP=2, seq 4096, meta device: 1 layer {one:.2f} s, 100 layers {hundred:.2f} s "
          f"({hundred / one:.1f}x the 1-layer baseline); {catalog['stats']['recorded_calls']} calls -> "
          f"{catalog['stats']['kept']} cases kept, {catalog['stats']['dropped']} dropped")

    import transformers

    from probes.catalog import write_catalog
    from probes.harvest_models import harvest_catalog
    from probes.registry import all_probes

    small = transformers.LlamaConfig(hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, vocab_size=4000)
    path = Path(tempfile.mkdtemp()) / "catalog.json"
    write_catalog(harvest_catalog(small, batch=1, seq_len=128, dtype="fp32", budget=64), path)
    probes = all_probes()
    rest = [p for name, p in probes.items() if name not in ("catalog", "burn", "collective")]
    base = sweep_seconds(rest, "cpu:0", None)
    with_catalog = sweep_seconds([probes["catalog"]], "cpu:0", str(path))
    share = with_catalog / (base + with_catalog)
    print(f"quick sweep on one virtual CPU chip: built-in probes {base:.1f} s, catalog ({path.stat().st_size // 1024} KiB, "
          f"small LLaMA at seq 128) {with_catalog:.1f} s = {with_catalog / base:.2f}x the built-in probes, "
          f"{share:.0%} of the total")


if __name__ == "__main__":
    main()
