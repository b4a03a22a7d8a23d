"""Fault injection for tests and drills on one rank, with the fault models of ``sdc.faults``:
corrupt forward activations of a module or the local gradient of a parameter (``ComputeFault``,
armed from a step on, transient / intermittent / persistent), the reduced gradient, a
parameter or an optimizer-state tensor (``flip_grad``, ``flip_param``, ``corrupt_state``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sdc.faults import Corruption, Timing, flip_bit

__all__ = ["ActivationFault", "ComputeFault", "corrupt_state", "flip_bit", "flip_grad", "flip_param"]


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


def corrupt_state(tensor: torch.Tensor, corruption: Corruption) -> None:
    """Corrupt a stored tensor in place (a parameter, an optimizer moment): memory, not compute."""
    with torch.no_grad():
        tensor.copy_(corruption.apply(tensor))


class ComputeFault:
    """A faulty unit on this rank: corrupts a module's forward output (``where="forward"``) or a
    parameter's local gradient as backward computes it (``where="backward"``, before any
    data-parallel reduction), whenever ``timing`` says so while armed.

    Replays and audits run the same module, so a persistent unit corrupts them too, as real
    hardware would; an unarmed fault does nothing.
    """

    def __init__(self, target: nn.Module | torch.Tensor, corruption: Corruption, timing: Timing, where: str = "forward"):
        self.corruption, self.timing, self.where = corruption, timing, where
        self.armed = False
        if where == "forward":
            self._handle = target.register_forward_hook(self._forward)
        elif where == "backward":
            self._handle = target.register_hook(self._backward)
        else:
            raise ValueError(f"ComputeFault: where={where!r}; choose forward or backward")

    @property
    def fired(self) -> int:
        return self.timing.fired

    def arm(self) -> None:
        self.armed = True

    def disarm(self) -> None:
        self.armed = False

    def remove(self) -> None:
        self._handle.remove()

    def _hit(self) -> bool:
        return self.armed and self.timing.fires()

    def _forward(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        if not isinstance(output, torch.Tensor) or not self._hit():
            return output
        # Corrupt the values, keep the autograd graph: backward runs through the unit as before.
        corrupted = output.clone()
        corrupted.detach().copy_(self.corruption.apply(output))
        return corrupted

    def _backward(self, grad: torch.Tensor) -> torch.Tensor:
        return self.corruption.apply(grad) if self._hit() else grad


class ActivationFault(ComputeFault):
    """Flips bit ``bit`` of element ``flat_index`` in a module's forward output while armed:
    on the next forward only (``persistent=False``) or on every forward until ``disarm()``."""

    def __init__(self, module: nn.Module, flat_index: int = 0, bit: int = 30, persistent: bool = False):
        self.persistent = persistent
        super().__init__(module, Corruption("bitflip", index=flat_index, bit=bit), Timing("persistent"), "forward")

    def _hit(self) -> bool:
        if not self.armed:
            return False
        self.timing.fires()
        if not self.persistent:
            self.armed = False
        return True
