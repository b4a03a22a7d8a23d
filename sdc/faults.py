"""Fault injection for drills and tests: make a chosen chip wrong, slow, inconsistent, hung or failing.

A fault is written ``CHIP:KIND[:KEY=VALUE,...]`` — on the command line as ``--inject`` (repeatable)
or in ``SDC_INJECT`` (several separated by ``;``)::

    cpu:2:bitflip:rate=0.05            one flipped bit in 5% of outputs, anywhere in the word
    cuda:1:bitflip:rate=1,bits=0-6,sticky=1   the same low mantissa bit every time (a consistently wrong chip)
    cpu:1:slowdown:factor=1.5          every timed kernel takes 1.5 times as long
    cpu:3:nondeterminism:rate=1        repeats after the first differ in their last bit
    cpu:0:hang:probe=gemm,case=square  the case never finishes (the watchdog turns it into ``timeout``)
    cpu:0:error:probe=memory           the case raises (recorded as ``error``, never as a fault)
    cpu:1:lowprec:bits=10              results rounded to 10 mantissa bits, as a kernel that keeps a
                                       lower-precision intermediate would (same answer every repeat)

Every kind accepts ``probe=NAME`` and ``case=NAME`` to limit it to some cases. Random choices
come from a generator seeded by chip, probe, case and repeat, so a drill is reproducible.
``flip_bit`` is the one primitive everything uses; the sentinel's drills import it too.

Compute corruption models for in-training drills (``Corruption``, ``Timing``): what happens to
the values (one bit, several bits of one word, the sign, a scale, set to a value, noise, or
a warp-aligned pattern hitting every 32nd element) and when (transient: once; intermittent:
each time with a probability; persistent: every time), as the hardware studies see them.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch

KINDS = ("bitflip", "slowdown", "nondeterminism", "hang", "error", "lowprec")
_ENV = "SDC_INJECT"

_PARAMS: dict[str, dict[str, type]] = {
    "bitflip": {"rate": float, "bits": str, "sticky": int},
    "slowdown": {"factor": float},
    "nondeterminism": {"rate": float},
    "hang": {},
    "error": {"message": str},
    "lowprec": {"bits": int},
}
_COMMON = {"probe": str, "case": str}


class FaultSpecError(ValueError):
    """An --inject / SDC_INJECT entry that cannot be understood; the message says how to fix it."""


class InjectedError(RuntimeError):
    """Raised by an injected ``error`` fault."""


_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def flip_bit(tensor: torch.Tensor, flat_index: int, bit: int) -> torch.Tensor:
    """Flip one bit of one element in place and return the tensor.

    ``flat_index`` counts elements of the (contiguous) tensor in row-major order; ``bit`` counts
    from the least significant bit of the element's storage word (0 .. 8*element_size-1).
    Works for every dtype, floats included, on any device.
    """
    if not tensor.is_contiguous():
        raise ValueError("flip_bit needs a contiguous tensor (call .contiguous() first)")
    # detach() shares the storage: a parameter that requires grad is corrupted in place too.
    flat = tensor.detach().reshape(-1)
    if tensor.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
        # A complex element holds two words; address the word, so bit 40 of a complex64 is bit 8 of its imaginary part.
        word_bits = 8 * flat.element_size()
        flat_index, bit = 2 * flat_index + bit // word_bits, bit % word_bits
    width = 8 * flat.element_size()
    if not 0 <= bit < width:
        raise ValueError(f"bit {bit} outside 0..{width - 1} for {tensor.dtype}")
    if not 0 <= flat_index < flat.numel():
        raise IndexError(f"element {flat_index} outside a tensor of {flat.numel()} elements")
    words = flat.view(_INT_VIEW[flat.element_size()])
    # The mask as a signed value of the word's width: the top bit is the sign bit.
    mask = 1 << bit
    if bit == width - 1:
        mask -= 1 << width
    if words.dtype == torch.uint8:
        mask &= 0xFF
    words[flat_index : flat_index + 1].bitwise_xor_(mask)
    return tensor


def round_mantissa(tensor: torch.Tensor, bits: int) -> torch.Tensor:
    """A floating tensor rounded to ``bits`` mantissa bits (to nearest); others unchanged."""
    if not tensor.is_floating_point() or bits >= round(-math.log2(torch.finfo(tensor.dtype).eps)):
        return tensor
    mantissa, exponent = torch.frexp(tensor.double())
    scale = 2.0 ** (bits + 1)  # frexp's mantissa is in [0.5, 1): one bit more before the point
    return torch.ldexp(torch.round(mantissa * scale) / scale, exponent.double()).to(tensor.dtype)


CORRUPTIONS = ("bitflip", "multibit", "sign", "scale", "set", "noise", "warp")
TIMINGS = ("transient", "intermittent", "persistent")


@dataclass(frozen=True)
class Corruption:
    """What a faulty unit does to a tensor's values.

    Args:
        model: ``bitflip`` (bit ``bit`` of element ``index``), ``multibit`` (``bits`` adjacent
            bits from ``bit`` down, in one word), ``sign`` (negate element ``index``),
            ``scale`` (multiply it by ``factor``), ``set`` (set it to ``value``), ``noise``
            (add Gaussian noise of ``sigma`` times the tensor's RMS to every element) or
            ``warp`` (flip bit ``bit`` of every ``stride``-th element from ``index``: a lane of
            a 32-wide warp that computes wrong).
    """

    model: str
    index: int = 0
    bit: int = 30
    bits: int = 3
    factor: float = 8.0
    value: float = 0.0
    sigma: float = 0.5
    stride: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.model not in CORRUPTIONS:
            raise FaultSpecError(f"corruption '{self.model}': choose one of {', '.join(CORRUPTIONS)}")

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        """A corrupted copy of ``tensor`` (the original is left alone)."""
        out = tensor.detach().clone().contiguous()
        flat = out.reshape(-1)
        if flat.numel() == 0:
            return out
        i = self.index % flat.numel()
        width = 8 * out.element_size()
        bit = min(self.bit, width - 1)
        if self.model == "bitflip":
            flip_bit(out, i, bit)
        elif self.model == "multibit":
            for b in range(bit, max(bit - self.bits, -1), -1):
                flip_bit(out, i, b)
        elif self.model == "sign":
            flat[i] = -flat[i] if flat[i] != 0 else -1.0
        elif self.model == "scale":
            flat[i] = flat[i] * self.factor if flat[i] != 0 else self.factor
        elif self.model == "set":
            flat[i] = self.value if flat[i] != self.value else self.value + 1.0
        elif self.model == "noise":
            g = torch.Generator(device="cpu").manual_seed(self.seed)
            rms = float(flat.double().pow(2).mean().sqrt()) or 1.0
            flat.add_((torch.randn(flat.shape, generator=g, dtype=torch.float64) * self.sigma * rms).to(flat.dtype).to(flat.device))
        elif self.model == "warp":
            for j in range(i % self.stride, flat.numel(), self.stride):
                flip_bit(out, j, bit)
        return out


@dataclass
class Timing:
    """When a fault fires, counted in calls of the faulty unit once it is armed.

    ``transient``: the first call only. ``intermittent``: each call with probability ``rate``
    (from a generator seeded by ``seed``, so a drill is reproducible). ``persistent``: every call.
    """

    kind: str
    rate: float = 0.5
    seed: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in TIMINGS:
            raise FaultSpecError(f"timing '{self.kind}': choose one of {', '.join(TIMINGS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise FaultSpecError(f"timing rate {self.rate}: must be between 0 and 1")
        self._rng = random.Random(self.seed)

    def fires(self) -> bool:
        """Whether this call is corrupted (counts it)."""
        if self.kind == "transient":
            hit = self.fired == 0
        elif self.kind == "intermittent":
            hit = self._rng.random() < self.rate
        else:
            hit = True
        self.fired += int(hit)
        return hit


@dataclass(frozen=True)
class Fault:
    """One injected fault on one chip, optionally limited to a probe and a case name."""

    chip: str
    kind: str
    params: Mapping[str, object] = field(default_factory=dict)

    def applies(self, probe: str, case: str) -> bool:
        return self.params.get("probe", probe) == probe and self.params.get("case", case) == case

    @property
    def rate(self) -> float:
        return float(self.params.get("rate", 1.0))

    def bit_range(self, width: int) -> tuple[int, int]:
        text = str(self.params.get("bits", f"0-{width - 1}"))
        low, _, high = text.partition("-")
        lo, hi = int(low), int(high or low)
        return max(0, min(lo, width - 1)), max(0, min(hi, width - 1))


def parse_fault(text: str) -> Fault:
    """Parse ``CHIP:KIND[:KEY=VALUE,...]`` (CHIP is BACKEND:INDEX, e.g. ``cpu:2``)."""
    parts = text.strip().split(":", 3)
    if len(parts) < 3 or not parts[1].isdigit():
        raise FaultSpecError(
            f"inject '{text}': expected CHIP:KIND[:KEY=VALUE,...] such as cpu:2:bitflip:rate=0.05"
        )
    chip, kind = f"{parts[0]}:{parts[1]}", parts[2]
    if kind not in KINDS:
        raise FaultSpecError(f"inject '{text}': unknown fault kind '{kind}'; choose one of {', '.join(KINDS)}")
    allowed = {**_PARAMS[kind], **_COMMON}
    params: dict[str, object] = {}
    for item in filter(None, (parts[3] if len(parts) > 3 else "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in allowed:
            raise FaultSpecError(
                f"inject '{text}': '{item}' is not KEY=VALUE with KEY one of {', '.join(sorted(allowed))}"
            )
        try:
            params[key] = allowed[key](value)
        except ValueError:
            raise FaultSpecError(f"inject '{text}': {key}={value} is not a valid {allowed[key].__name__}") from None
    if "rate" in params and not 0.0 <= float(params["rate"]) <= 1.0:
        raise FaultSpecError(f"inject '{text}': rate must be between 0 and 1")
    if "factor" in params and float(params["factor"]) < 1.0:
        raise FaultSpecError(f"inject '{text}': slowdown factor must be at least 1")
    if "bits" in params and not all(p.isdigit() for p in str(params["bits"]).split("-")):
        raise FaultSpecError(f"inject '{text}': bits must be N or LOW-HIGH, e.g. bits=0-22")
    return Fault(chip, kind, params)


def parse_faults(entries: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> list[Fault]:
    """Faults from command-line entries plus ``SDC_INJECT`` (entries separated by ';')."""
    env = os.environ if environ is None else environ
    texts = [e for e in entries if e.strip()]
    texts += [e for e in env.get(_ENV, "").split(";") if e.strip()]
    return [parse_fault(t) for t in texts]


class FaultInjector:
    """The faults of one chip, applied by the probe harness at fixed points of each repeat.

    ``before`` runs before a repeat (hang, error), ``stretch`` inside its timed region
    (slowdown), ``corrupt`` on its output after timing (bitflip, nondeterminism).
    """

    def __init__(self, chip: str, faults: Iterable[Fault] = ()):
        self.chip = chip
        self.faults = [f for f in faults if f.chip == chip]

    def __bool__(self) -> bool:
        return bool(self.faults)

    def _active(self, kind: str, probe: str, case: str) -> list[Fault]:
        return [f for f in self.faults if f.kind == kind and f.applies(probe, case)]

    def _rng(self, probe: str, case: str, repeat: int, salt: str = "") -> random.Random:
        key = f"{self.chip}|{probe}|{case}|{repeat}|{salt}".encode()
        return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))

    def before(self, probe: str, case: str) -> None:
        if self._active("error", probe, case):
            message = str(self._active("error", probe, case)[0].params.get("message", "injected error"))
            raise InjectedError(f"{message} on {self.chip}")
        if self._active("hang", probe, case):
            while True:  # a kernel that never returns; only the sweep's watchdog ends it
                time.sleep(3600)

    def stretch(self, probe: str, case: str, elapsed: float) -> None:
        """Sleep so that a repeat that took ``elapsed`` seconds takes ``factor`` times as long."""
        for fault in self._active("slowdown", probe, case):
            time.sleep(max(0.0, (float(fault.params.get("factor", 2.0)) - 1.0) * elapsed))

    def corrupt(self, output: torch.Tensor, probe: str, case: str, repeat: int) -> torch.Tensor:
        """The output as this chip would have produced it (a corrupted copy, or the output itself)."""
        flips: list[tuple[int, int]] = []
        width = 8 * output.element_size() * (2 if output.is_complex() else 1)
        for fault in self._active("bitflip", probe, case):
            sticky = bool(int(fault.params.get("sticky", 0)))
            rng = self._rng(probe, case, 0 if sticky else repeat, "bitflip")
            if rng.random() < fault.rate and output.numel():
                low, high = fault.bit_range(width)
                flips.append((rng.randrange(output.numel()), rng.randint(low, high)))
        for fault in self._active("nondeterminism", probe, case):
            rng = self._rng(probe, case, repeat, "nondeterminism")
            # The first repeat is the chip's answer; later ones wander in the last bit, as an
            # order-dependent reduction would, and stay within any error bound.
            if repeat > 0 and rng.random() < fault.rate and output.numel():
                flips.append((rng.randrange(output.numel()), 0))
        for fault in self._active("lowprec", probe, case):
            output = round_mantissa(output, int(fault.params.get("bits", 10)))
        if not flips:
            return output
        output = output.clone().contiguous()
        for index, bit in flips:
            flip_bit(output, index, bit)
        return output
