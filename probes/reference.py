"""fp64 CPU references, cached per (probe, version, case, seed).

A reference costs more than the kernel it checks (fp64 on the CPU), so it is computed once:
kept in an in-process LRU bounded by bytes, and, when a cache directory is set (the sweep
sets ``<data dir>/reference-cache``; ``SDC_REFERENCE_CACHE`` overrides), on disk so the
worker processes of other chips and later sweeps reuse it. Files are written to a temporary
name and renamed, so parallel workers never read a half-written one.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional

import torch

from probes.base import Case
from sdc.records import canonical_json

_ENV = "SDC_REFERENCE_CACHE"
MAX_BYTES = 1 << 30

_lock = threading.Lock()
_memory: "OrderedDict[str, torch.Tensor]" = OrderedDict()
_bytes = 0
_cache_dir: Optional[Path] = None


def set_cache_dir(path: str | os.PathLike | None) -> None:
    """Where references persist between processes (None: memory only)."""
    global _cache_dir
    _cache_dir = Path(path) if path else None


def cache_dir() -> Optional[Path]:
    env = os.environ.get(_ENV)
    return Path(env) if env else _cache_dir


def reference_key(probe: str, version: int, case: Case, seed: int, part: str = "") -> str:
    text = canonical_json({"probe": probe, "version": version, "case": case.to_dict(), "seed": seed, "part": part})
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cached(key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The reference under ``key``: from memory, else from disk, else ``compute()`` (then stored)."""
    global _bytes
    with _lock:
        if key in _memory:
            _memory.move_to_end(key)
            return _memory[key]
    value = _load(key)
    if value is None:
        value = compute().detach().to("cpu").contiguous()
        _save(key, value)
    with _lock:
        if key not in _memory:
            _memory[key] = value
            _bytes += value.numel() * value.element_size()
        while _bytes > MAX_BYTES and len(_memory) > 1:
            _, old = _memory.popitem(last=False)
            _bytes -= old.numel() * old.element_size()
    return value


def clear_memory() -> None:
    global _bytes
    with _lock:
        _memory.clear()
        _bytes = 0


def _path(key: str) -> Optional[Path]:
    base = cache_dir()
    return base / f"{key}.pt" if base is not None else None


def _load(key: str) -> Optional[torch.Tensor]:
    path = _path(key)
    if path is None or not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged cache file is recomputed, never trusted
        return None


def _save(key: str, value: torch.Tensor) -> None:
    path = _path(key)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(value, tmp)
        os.replace(tmp, path)
    except OSError:
        pass  # the cache is an optimisation; a read-only disk costs time, not correctness
