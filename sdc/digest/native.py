"""The CPU fast path of ``sdc.digest``: a one-pass C kernel, built with the package.

torch has no fused "sum of int32 words widened to int64, plus a position-weighted sum"
(``x.view(torch.int32).sum(dtype=torch.int64)`` alone runs at a tenth of ``torch.sum``), and
torch.compile on the CPU emulates the 64-bit multiply. ``kernels/digest.c`` computes both sums
in one pass with adds only. It is compiled when the package is installed (the optional
extension module ``sdc.digest._native`` of setup.py), choosing its AVX-512, AVX2 or plain loop
at run time from the CPU it runs on, and is called through ctypes (which releases the GIL, so
a tensor is split across ``torch.get_num_threads()`` Python threads). Where it was not built
(no C compiler at install time) or cannot load, ``available()`` is False and callers use the
eager path; nothing is compiled at run time.

The same library holds ``kernels/magnitude.c``, the sentinel's every-step probe of the reduced
gradients (``MagnitudeProbe``): a few pages read per step, so it is a C-API function of the
importable module instead, where a ctypes call's argument conversions would cost more than it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

log = logging.getLogger(__name__)

MODULE = "sdc.digest._native"
MASK = (1 << 64) - 1
# Below this many words the thread hand-off costs more than it saves.
PARALLEL_MIN_WORDS = 1 << 20
ISA_NAMES = {0: "plain", 1: "avx2", 2: "avx512"}

# dtype codes of kernels/magnitude.c
MAGNITUDE_DTYPES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}

_lock = threading.Lock()
_magnitude: Callable[[list, tuple, int], float] | None = None
_functions: dict[int, ctypes._CFuncPtr] | None = None
_isa: str | None = None
_failed = False
_pool: ThreadPoolExecutor | None = None


def library_path() -> str | None:
    """Where the built kernel is, or None when the package was installed without it."""
    spec = importlib.util.find_spec(MODULE)
    return spec.origin if spec is not None and spec.origin else None


def _load() -> dict[int, ctypes._CFuncPtr] | None:
    global _functions, _failed, _isa, _magnitude
    if _functions is not None or _failed:
        return _functions
    with _lock:
        if _functions is not None or _failed:
            return _functions
        if os.environ.get("SDC_DIGEST_NATIVE", "1") == "0":
            _failed = True
            return None
        path = library_path()
        if path is None:
            log.info("sdc digest: native CPU kernel not built (no C compiler at install time); using the eager path")
            _failed = True
            return None
        try:
            lib = ctypes.CDLL(path)
            functions = {1: lib.sdc_digest_u8, 2: lib.sdc_digest_i16, 4: lib.sdc_digest_i32}
            for fn in functions.values():
                fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
                fn.restype = None
            lib.sdc_digest_isa.restype = ctypes.c_int
            _isa = ISA_NAMES.get(lib.sdc_digest_isa(), "unknown")
            try:  # the probe's kernel is a C-API function of the same library (absent from older builds)
                _magnitude = getattr(importlib.import_module(MODULE), "max_magnitude", None)
            except ImportError:
                _magnitude = None
            _functions = functions
        except Exception as exc:  # any failure means: use the eager path
            log.info("sdc digest: native CPU kernel unavailable (%s); using the eager path", exc)
            _failed = True
    return _functions


def instruction_set() -> str | None:
    """The loop the kernel chose for this CPU (avx512, avx2, plain), or None when unavailable."""
    _load()
    return _isa


def available() -> bool:
    return _load() is not None


def magnitude_available() -> bool:
    return _load() is not None and _magnitude is not None


class MagnitudeProbe:
    """The largest magnitude over the first ``counts[i]`` elements at each of a fixed list of
    addresses of one float dtype (``kernels/magnitude.c``, through the C API: a ctypes call's
    argument conversions cost more than the kernel here): built once, called on every step
    with that step's addresses (0 for an array absent this step)."""

    def __init__(self, dtype: torch.dtype, counts: list[int]):
        if not magnitude_available():
            raise RuntimeError("native magnitude kernel unavailable")
        self.code = MAGNITUDE_DTYPES[dtype]
        self.counts = tuple(int(c) for c in counts)

    def __call__(self, addresses: list[int]) -> float:
        return _magnitude(addresses, self.counts, self.code)


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
