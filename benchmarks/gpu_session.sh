#!/usr/bin/env bash
# Every GPU check of the project in one run, for a lent GPU machine (one NVIDIA GPU, no
# network): digest throughput and exactness, sentinel overhead and fault scenarios on the
# device, and a real probe sweep of the GPU (healthy, then with an injected fault).
#
# The machine has torch and Triton but not sdc's other dependencies: carry them as wheels in
# .whl/ (pip download ... --python-version 3.12 ..., plus `python -m build --wheel` of sdc).
# Figures go to stdout and, with logs and the sweep's records, to $OUT (default ./out).
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then  # a lent machine: sdc is not installed there
    # `python3 -m` imports sdc from this checkout, where the migrations live at the top (an
    # install packages them as sdc.migrations): copy them in, on that throwaway copy only.
    [ -d sdc/migrations ] || cp -r migrations sdc/migrations
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
step() { echo; echo "== $1 ($(date +%T))"; }
# ONLY="sweep scenarios" runs just those sections
# (machine digest timing sentinel audit sweep burn scenarios).
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }

if want machine; then
step "machine"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.total --format=csv
python3 -c "import torch, triton, sdc; print('torch', torch.__version__, 'triton', triton.__version__, 'sdc', sdc.__version__, sdc.__file__)"

fi

if want digest; then
step "digest throughput vs torch.sum, 256 MB"
timeout 200 python3 benchmarks/bench_fingerprint.py --device cuda 2>&1 | tee "$OUT/bench_fingerprint.txt"

step "digest exactness on the GPU (every path against the CPU reference)"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/digest/test_accelerators.py 2>&1 | tail -15 | tee "$OUT/test_digest_accelerators.txt"

fi

if want timing; then
step "device-event timings against wall-clock on the GEMM probe's shapes (launch-bound cases marked)"
timeout 120 python3 benchmarks/bench_timing.py --device cuda:0 --dtype bf16 2>&1 | tee "$OUT/bench_timing.txt"
timeout 120 python3 benchmarks/bench_timing.py --device cuda:0 --dtype fp32 2>&1 | tail -5 | tee -a "$OUT/bench_timing.txt"

fi

if want audit; then
step "recompute audit bit-reproducibility: 20 repeats under the audit's deterministic scope (must be 1 digest)"
timeout 120 python3 benchmarks/audit_repeats.py --device cuda:0 --repeats 20 --width 1024 --tokens 512 2>&1 | tee "$OUT/audit_repeats.txt"
echo "audit repeats exit ${PIPESTATUS[0]}"

fi

if want sentinel; then
step "sentinel overhead on the GPU, 1 rank (nccl), ~210M parameters"
timeout 180 python3 benchmarks/bench_sentinel.py --device cuda --backend nccl --ranks 1 --hidden 8192 --layers 4 \
    --batch 8192 --blocks 4 --steps 25 --no-events 2>&1 | tail -12 | tee "$OUT/bench_sentinel_gpu.txt"

fi

if want sweep; then
step "probe sweep of cuda:0 (quick suite), then a drill with an injected bit flip"
export SDC_DATA_DIR=/tmp/sdcdata SDC_DATABASE_URL=sqlite:////tmp/sdcdata/sdc.db SDC_CONFIG=/dev/null
mkdir -p /tmp/sdcdata
python3 -m sdc db upgrade >/dev/null
# The README promises at most a minute per GPU for the quick suite: the wall time is printed.
SECONDS=0
timeout 240 python3 -m sdc sweep --devices cuda:0 --suite quick 2>&1 | tail -25 | tee "$OUT/sweep.txt"
echo "sweep exit ${PIPESTATUS[0]} (0 = healthy), quick suite took ${SECONDS} s (README: at most a minute per GPU)"
timeout 150 python3 -m sdc sweep --devices cuda:0 --suite quick --probes gemm,memory --inject cuda:0:bitflip:rate=1 2>&1 | tail -15 | tee "$OUT/drill.txt"
echo "drill exit ${PIPESTATUS[0]}"
python3 -m sdc export > "$OUT/records.jsonl" 2>/dev/null
python3 -m sdc --json status > "$OUT/status.json" 2>/dev/null

fi

if want burn; then
step "burn long enough that its iteration count passes int16 (32,767): it must still count as evidence"
export SDC_DATA_DIR=/tmp/sdcdata SDC_DATABASE_URL=sqlite:////tmp/sdcdata/sdc.db SDC_CONFIG=/dev/null
mkdir -p /tmp/sdcdata
python3 -m sdc db upgrade >/dev/null
timeout 200 python3 -m sdc sweep --devices cuda:0 --suite burn --duration 90 2>&1 | tail -10 | tee "$OUT/burn.txt"
echo "burn exit ${PIPESTATUS[0]}"
python3 -m sdc export 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    if r.get("record") == "probe_result" and r.get("probe") == "burn":
        t = r.get("telemetry") or {}
        b = t.get("burn") or {}
        print("burn", r["case"]["shape"], r["case"]["dtype"], "iterations", r.get("repeats"), "distinct", r.get("distinct_repeat_digests"),
              "status", r.get("status"), "clock", t.get("timing_clock"), "last/first", b.get("last_vs_first"),
              "slowest interval", b.get("slowest_interval"), "|", r.get("message"))
' | tee -a "$OUT/burn.txt"
python3 -m sdc analyze >/dev/null 2>&1; python3 -m sdc report 2>&1 | tail -8 | tee -a "$OUT/burn.txt"

fi

if want scenarios; then
step "sentinel scenarios on the GPU (4 gloo ranks sharing cuda:0), and no host sync between checks"
SDC_TEST_DEVICE=cuda timeout 240 python3 -m pytest -q -p no:cacheprovider tests/sentinel/test_replicas.py tests/sentinel/test_hot_path.py 2>&1 | tail -15 | tee "$OUT/test_replicas_gpu.txt"

fi
step "done"
