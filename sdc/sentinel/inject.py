"""Fault injection for tests and drills: flip one bit in one rank's gradients after the
reduction, in its parameters after the step, or in its forward activations, once (transient)
or on every forward while armed (persistent)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sdc.faults import flip_bit

__all__ = ["ActivationFault", "flip_bit", "flip_grad", "flip_param"]


def _param(model: nn.Module, name: str) -> nn.Parameter:
    for candidate, param in model.named_parameters():
        if candidate == name or candidate.removeprefix("module.") == name:
            return param
    raise KeyError(f"no parameter named {name!r}; have {[n for n, _ in model.named_parameters()][:8]}...")


def flip_grad(model: nn.Module, name: str, flat_index: int = 0, bit: int = 20) -> None:
    """Corrupt this rank's reduced gradient of parameter ``name`` (call after the reduction)."""
    param = _param(model, name)
    if param.grad is None:
        raise ValueError(f"flip_grad: parameter {name!r} has no gradient yet; call it after backward()")
    flip_bit(param.grad, flat_index, bit)


def flip_param(model: nn.Module, name: str, flat_index: int = 0, bit: int = 20) -> None:
    """Corrupt this rank's copy of parameter ``name`` (as HBM corruption after the step would)."""
    flip_bit(_param(model, name).data, flat_index, bit)


class ActivationFault:
    """Flips a bit in a module's forward output on this rank while armed.

    ``persistent=False``: fires on the next forward only (a transient upset).
    ``persistent=True``: fires on every forward until ``disarm()`` (a bad unit).
    """

    def __init__(self, module: nn.Module, flat_index: int = 0, bit: int = 30, persistent: bool = False):
        self.flat_index, self.bit, self.persistent = flat_index, bit, persistent
        self.armed = False
        self.fired = 0
        self._handle = module.register_forward_hook(self._hook)

    def arm(self) -> None:
        self.armed = True

    def disarm(self) -> None:
        self.armed = False

    def remove(self) -> None:
        self._handle.remove()

    def _hook(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if not self.armed:
            return output
        corrupted = output.clone()
        flip_bit(corrupted, self.flat_index % corrupted.numel(), self.bit)
        self.fired += 1
        if not self.persistent:
            self.armed = False
        return corrupted
