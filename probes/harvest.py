"""Harvest: record the ATen ops one training step of a model runs, at its own shapes and dtypes.

``harvest(model, inputs)`` runs forward and backward under a ``TorchDispatchMode`` (plus a
``TorchFunctionMode`` that sees scaled dot-product attention before it is decomposed) and
records every op sdc can replay: GEMMs, convolutions, attention, norms, softmax, elementwise
math, reductions, embedding, casts — with shapes, strides (transposition), dtypes and scalar
arguments — and the sizes of collectives. It works on the meta device (and under
``FakeTensorMode``): nothing is computed, so a 70B configuration is harvested on a laptop.

``shard_tensor_parallel`` gives a model the per-rank shapes of a tensor-parallel plan (the
Hugging Face ``base_model_tp_plan`` of its config: colwise / rowwise), and records the
all-reduces that plan implies. The recorded calls go to ``probes.catalog`` to be deduplicated,
compressed and written.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

DTYPE_NAMES = {torch.float64: "fp64", torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
               torch.int64: "int64", torch.int32: "int32", torch.bool: "bool"}
DTYPES_BY_NAME = {v: k for k, v in DTYPE_NAMES.items()}

# ATen op (overload packet) -> kernel class, i.e. the tolerance row family it is judged by.
KERNEL_CLASS: dict[str, str] = {
    **dict.fromkeys(("mm", "bmm", "addmm", "baddbmm", "addbmm"), "gemm"),
    **dict.fromkeys(("convolution", "convolution_backward"), "conv"),
    **dict.fromkeys(("native_layer_norm", "native_layer_norm_backward", "_fused_rms_norm",
                     "native_group_norm"), "norm"),
    **dict.fromkeys(("_softmax", "_safe_softmax", "_log_softmax", "_softmax_backward_data",
                     "_log_softmax_backward_data"), "softmax"),
    **dict.fromkeys(("exp", "log", "tanh", "sigmoid", "silu", "sin", "cos", "erf", "rsqrt", "sqrt",
                     "pow"), "transcendental"),
    # Several rounded terms with cancellation — GELU's 1 + erf(x/sqrt 2) for negative x, the
    # derivatives' 1 + x(1 - s): errors follow the tensor's scale, not each element's ulp.
    **dict.fromkeys(("gelu", "gelu_backward", "silu_backward", "tanh_backward", "sigmoid_backward"), "composite"),
    **dict.fromkeys(("add", "sub", "mul", "div", "neg"), "arith"),
    **dict.fromkeys(("sum", "mean"), "reduce"),
    **dict.fromkeys(("embedding", "amax", "amin", "clone", "cat"), "data_movement"),
    "_to_copy": "cast",
}
# Inputs these ops need on a restricted domain to stay finite (index of the operand).
POSITIVE_OPERANDS = {"log": (0,), "rsqrt": (0,), "sqrt": (0,), "div": (1,)}
SDPA_OP = "sdc.scaled_dot_product_attention"


class NotReplayable(Exception):
    """An argument (a generator, an opaque object) sdc cannot write down and replay."""


@dataclass
class OpCall:
    """One recorded op call: op name, input tensor specs, argument template, kernel class, phase."""

    op: str
    kernel_class: str
    inputs: list[dict[str, Any]]
    args: list[Any]
    kwargs: dict[str, Any]
    phase: str


@dataclass
class Recording:
    calls: list[OpCall] = field(default_factory=list)
    collectives: list[dict[str, Any]] = field(default_factory=list)
    not_replayable: Counter = field(default_factory=Counter)
    ignored: Counter = field(default_factory=Counter)


def _phase() -> str:
    return "backward" if torch._C._current_autograd_node() is not None else "forward"


def tensor_spec(t: torch.Tensor) -> dict[str, Any]:
    if t.dtype not in DTYPE_NAMES:
        raise NotReplayable(f"dtype {t.dtype}")
    return {"shape": list(t.shape), "stride": list(t.stride()), "dtype": DTYPE_NAMES[t.dtype]}


def encode(value: Any, inputs: list[dict[str, Any]]) -> Any:
    """An argument as JSON: tensors become ``{"t": i}`` (spec in ``inputs``), dtypes ``{"dtype": ..}``."""
    if isinstance(value, torch.Tensor):
        inputs.append(tensor_spec(value))
        return {"t": len(inputs) - 1}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return {"float": str(value)}
        return value
    if isinstance(value, (list, tuple)):
        return [encode(v, inputs) for v in value]
    if isinstance(value, torch.dtype):
        if value not in DTYPE_NAMES:
            raise NotReplayable(f"dtype {value}")
        return {"dtype": DTYPE_NAMES[value]}
    if isinstance(value, torch.device):
        return {"device": None}
    if isinstance(value, (torch.memory_format, torch.layout)):
        return {"enum": str(value).removeprefix("torch.")}
    raise NotReplayable(type(value).__name__)


def record_call(recording: Recording, op: str, kernel_class: str, args, kwargs) -> None:
    inputs: list[dict[str, Any]] = []
    try:
        encoded_args = [encode(a, inputs) for a in args]
        encoded_kwargs = {k: encode(v, inputs) for k, v in kwargs.items()}
    except NotReplayable:
        recording.not_replayable[op] += 1
        return
    if op.startswith("aten.embedding") and len(inputs) >= 2:
        # Indices must address rows that exist: replay draws them below the weight's row count.
        inputs[1]["int_range"] = inputs[0]["shape"][0]
    elif any(spec["dtype"] in ("int64", "int32") for spec in inputs):
        recording.not_replayable[op] += 1  # integer operands whose valid values we cannot know
        return
    packet = op.split(".")[1] if op.startswith("aten.") else op
    for index in POSITIVE_OPERANDS.get(packet, ()):
        if index < len(inputs):
            inputs[index]["domain"] = "positive"
    if packet == "pow" and args and not _integer_exponent(args[-1]):
        inputs[0]["domain"] = "positive"  # a negative base to a fractional power is NaN
    recording.calls.append(OpCall(op, kernel_class, inputs, encoded_args, encoded_kwargs, _phase()))


def _integer_exponent(exponent: Any) -> bool:
    return isinstance(exponent, (int, float)) and float(exponent).is_integer()


class _DispatchRecorder(TorchDispatchMode):
    def __init__(self, recording: Recording, function_mode: "_FunctionRecorder"):
        super().__init__()
        self.recording = recording
        self.function_mode = function_mode

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket.__name__
        if packet.startswith("_c10d_functional") or "all_reduce" in packet or "all_gather" in packet:
            self.recording.collectives.append(_collective(packet, args))
        elif self.function_mode.inside_attention:
            pass  # the pieces of an attention call recorded whole by the function mode
        elif packet in KERNEL_CLASS:
            record_call(self.recording, f"aten.{packet}.{func._overloadname}", KERNEL_CLASS[packet], args, kwargs)
        else:
            self.recording.ignored[packet] += 1
        return out


class _FunctionRecorder(TorchFunctionMode):
    """Sees ``F.scaled_dot_product_attention`` as the user called it (the meta device decomposes it)."""

    def __init__(self, recording: Recording):
        super().__init__()
        self.recording = recording
        self.inside_attention = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention and not self.inside_attention:
            names = ("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
            options = dict(zip(names, args[3:]), **kwargs)
            # Dropout is random, not replayable: the case keeps the shapes, without dropout.
            record_call(self.recording, SDPA_OP, "attention", list(args[:3]),
                        {k: v for k, v in options.items() if k != "dropout_p"})
            self.inside_attention = True
            try:
                return func(*args, **kwargs)
            finally:
                self.inside_attention = False
        return func(*args, **kwargs)


def _collective(name: str, args) -> dict[str, Any]:
    tensor = next((a for a in args if isinstance(a, torch.Tensor)), None)
    spec = tensor_spec(tensor) if tensor is not None and tensor.dtype in DTYPE_NAMES else {}
    return {"op": name, "shape": spec.get("shape", []), "dtype": spec.get("dtype", "")}


def _loss_of(output: Any) -> torch.Tensor:
    loss = getattr(output, "loss", None)
    if loss is not None:
        return loss
    if isinstance(output, dict):
        output = next(iter(output.values()))
    if isinstance(output, (tuple, list)):
        output = output[0]
    return output.float().sum()


def harvest(
    model: torch.nn.Module,
    inputs: tuple | dict,
    loss_fn: Optional[Callable[[Any], torch.Tensor]] = None,
    backward: bool = True,
    recording: Optional[Recording] = None,
) -> Recording:
    """Run one training step of ``model`` on ``inputs`` and record the ops it runs.

    Args:
        model: any module; on the meta device for free harvesting of large configurations.
        inputs: positional arguments (tuple) or keyword arguments (dict) of ``model``.
        loss_fn: turns the output into a scalar loss (default: ``output.loss``, else a sum).
        backward: also run (and record) the backward pass.
        recording: a ``Recording`` to add to (``shard_tensor_parallel`` puts collectives there).
    """
    recording = recording if recording is not None else Recording()
    function_mode = _FunctionRecorder(recording)
    with function_mode, _DispatchRecorder(recording, function_mode):
        output = model(**inputs) if isinstance(inputs, dict) else model(*inputs)
        if backward:
            loss = loss_fn(output) if loss_fn is not None else _loss_of(output)
            loss.backward()
    return recording


def tp_plan_of(model: torch.nn.Module) -> dict[str, str]:
    """The model's Hugging Face tensor-parallel plan (module glob -> colwise/rowwise), or {}."""
    config = getattr(model, "config", None)
    plan = dict(getattr(config, "base_model_tp_plan", None) or {})
    return {k: v for k, v in plan.items() if v in ("colwise", "rowwise")}


def shard_tensor_parallel(model: torch.nn.Module, tp_size: int, recording: Recording,
                          plan: Optional[dict[str, str]] = None) -> int:
    """Give ``model`` the weights one rank holds under a colwise/rowwise plan; returns modules sharded.

    Colwise layers keep ``out/tp`` output features, rowwise ones ``in/tp`` input features, as
    Megatron-style tensor parallelism does; a rowwise layer's output is all-reduced in the
    forward, a colwise layer's input gradient in the backward — both recorded as collectives.
    ValueError when the plan is empty or a dimension does not divide.
    """
    plan = plan if plan is not None else tp_plan_of(model)
    if tp_size <= 1:
        return 0
    if not plan:
        raise ValueError("the model has no tensor-parallel plan (config.base_model_tp_plan); cannot shard it")
    sharded = 0
    for name, module in model.named_modules():
        style = next((s for glob, s in plan.items() if fnmatch.fnmatch(name, glob) or fnmatch.fnmatch(name, f"*.{glob}")), None)
        if style is None or not isinstance(module, torch.nn.Linear):
            continue
        out_f, in_f = module.weight.shape
        size = out_f if style == "colwise" else in_f
        if size % tp_size:
            raise ValueError(f"{name}: {size} features do not divide by tensor-parallel size {tp_size}")
        shape = (out_f // tp_size, in_f) if style == "colwise" else (out_f, in_f // tp_size)
        weight = module.weight
        module.weight = torch.nn.Parameter(torch.empty(shape, dtype=weight.dtype, device=weight.device))
        if module.bias is not None and style == "colwise":
            module.bias = torch.nn.Parameter(torch.empty(shape[0], dtype=weight.dtype, device=weight.device))
        module.out_features, module.in_features = shape
        module.register_forward_hook(_rowwise_hook(recording) if style == "rowwise" else _colwise_hook(recording))
        sharded += 1
    return sharded


def _rowwise_hook(recording: Recording):
    def hook(_module, _args, output):
        recording.collectives.append({"op": "all_reduce", "phase": "forward", **_shape_dtype(output)})
    return hook


def _colwise_hook(recording: Recording):
    def hook(_module, args, _output):
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.requires_grad:
            x.register_hook(lambda grad: recording.collectives.append(
                {"op": "all_reduce", "phase": "backward", **_shape_dtype(grad)}))
    return hook


def _shape_dtype(t: torch.Tensor) -> dict[str, Any]:
    return {"shape": list(t.shape), "dtype": DTYPE_NAMES.get(t.dtype, str(t.dtype))}
