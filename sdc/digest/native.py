"""The CPU fast path of ``sdc.digest``: a one-pass C kernel, built at first use.

torch has no fused "sum of int32 words widened to int64, plus a position-weighted sum"
(``x.view(torch.int32).sum(dtype=torch.int64)`` alone runs at a tenth of ``torch.sum``), and
torch.compile on the CPU emulates the 64-bit multiply. ``sdc/kernels/digest_avx2.c`` computes
both sums in one pass with adds only; it is compiled with the system C compiler into a
per-user cache the first time it is needed, and called through ctypes (which releases the
GIL, so a tensor is split across ``torch.get_num_threads()`` Python threads). When no
compiler is found or anything fails, ``available()`` is False and callers use the eager path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels") / "digest_avx2.c"
MASK = (1 << 64) - 1
# Below this many words the thread hand-off costs more than it saves.
PARALLEL_MIN_WORDS = 1 << 20

_lock = threading.Lock()
_functions: dict[int, ctypes._CFuncPtr] | None = None
_failed = False
_pool: ThreadPoolExecutor | None = None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sdc" / "kernels"


def _capability() -> str:
    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:
        return "DEFAULT"


def _flag_sets() -> list[list[str]]:
    """Compiler flags, best first: a compiler too old for the AVX-512 loop still builds AVX2."""
    base = ["-O3", "-shared", "-fPIC", "-std=c99"]
    avx2 = base + ["-mavx2", "-DSDC_AVX2"]
    capability = _capability()
    if capability == "AVX512":
        return [avx2 + ["-mavx512f", "-DSDC_AVX512"], avx2, base]
    if capability == "AVX2":
        return [avx2, base]
    return [base]


def _build() -> Path:
    error: Exception | None = None
    for flags in _flag_sets():
        try:
            return _build_with(flags)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            error = exc
    assert error is not None
    raise error


def _build_with(flags: list[str]) -> Path:
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join(flags).encode()).hexdigest()[:16]
    target = _cache_dir() / f"digest-{key}.so"
    if target.exists():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        raise RuntimeError("no C compiler found")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build to a private name, then rename: concurrent ranks never load a half-written file.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        subprocess.run([compiler, *flags, "-o", str(built), str(SOURCE)], check=True, capture_output=True, timeout=120)
        os.replace(built, target)
    return target


def _load() -> dict[int, ctypes._CFuncPtr] | None:
    global _functions, _failed
    if _functions is not None or _failed:
        return _functions
    with _lock:
        if _functions is not None or _failed:
            return _functions
        if os.environ.get("SDC_DIGEST_NATIVE", "1") == "0":
            _failed = True
            return None
        try:
            lib = ctypes.CDLL(str(_build()))
            functions = {1: lib.sdc_digest_u8, 2: lib.sdc_digest_i16, 4: lib.sdc_digest_i32}
            for fn in functions.values():
                fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
                fn.restype = None
            _functions = functions
        except Exception as exc:  # any failure means: use the eager path
            log.info("sdc digest: native CPU kernel unavailable (%s); using the eager path", exc)
            _failed = True
    return _functions


def available() -> bool:
    return _load() is not None


def _run(fn, address: int, count: int) -> tuple[int, int]:
    out = (ctypes.c_uint64 * 2)()
    fn(address, count, out)
    return out[0], out[1]


def word_sums(words: torch.Tensor) -> tuple[int, int]:
    """(plain, weighted) sums mod 2**64 of a contiguous CPU tensor of 1/2/4-byte words."""
    global _pool
    functions = _load()
    if functions is None:
        raise RuntimeError("native digest kernel unavailable")
    fn = functions[words.element_size()]
    n, width, base = words.numel(), words.element_size(), words.data_ptr()
    threads = max(1, torch.get_num_threads())
    if n < PARALLEL_MIN_WORDS or threads == 1:
        return _run(fn, base, n)
    if _pool is None or _pool._max_workers != threads:
        _pool = ThreadPoolExecutor(threads, thread_name_prefix="sdc-digest")
    step = -(-n // threads)
    starts = list(range(0, n, step))
    parts = _pool.map(lambda s: (s, *_run(fn, base + s * width, min(step, n - s))), starts)
    total = weighted = 0
    for start, part_total, part_weighted in parts:
        # A part's positions start at 1; shifting them by `start` adds start * its plain sum.
        total = (total + part_total) & MASK
        weighted = (weighted + part_weighted + start * part_total) & MASK
    return total, weighted
