"""Build the model to harvest without its weights: a Hugging Face config, or a user factory.

Models are built on the meta device (no memory, no weights), cast to the training dtype,
optionally sharded to one tensor-parallel rank's shapes, and given a batch of token ids of
the training sequence length. ``harvest_catalog`` turns that into a catalog document.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path
from typing import Any, Callable

import torch

from probes.catalog import build_catalog
from probes.harvest import DTYPES_BY_NAME, Recording, harvest, shard_tensor_parallel


class HarvestError(ValueError):
    """The model to harvest cannot be built as asked; the message says what to change."""


def load_hf_config(source: str):
    """A ``transformers`` config from a config.json file or a directory holding one (offline)."""
    try:
        from transformers import AutoConfig
    except ImportError:
        raise HarvestError("harvesting a Hugging Face config needs transformers: pip install 'sdc[hf]'") from None
    path = Path(source)
    if path.is_file():
        data = json.loads(path.read_text())
        model_type = data.pop("model_type", None)
        if not model_type:
            raise HarvestError(f"{source}: config has no 'model_type' (e.g. \"llama\", \"gpt2\")")
        try:
            return AutoConfig.for_model(model_type, **data)
        except (ValueError, KeyError) as exc:
            raise HarvestError(f"{source}: {str(exc).splitlines()[0]}") from None
    if path.is_dir():
        return AutoConfig.from_pretrained(str(path), local_files_only=True)
    raise HarvestError(f"{source}: no such config file or directory")


def describe_config(config, **extra: Any) -> dict[str, Any]:
    values = json.loads(config.to_json_string(use_diff=False))
    text = json.dumps(values, sort_keys=True)
    name = extra.pop("name", None) or (getattr(config, "architectures", None) or [config.model_type])[0]
    return {"name": str(name), "config_hash": hashlib.sha256(text.encode()).hexdigest()[:16],
            "config": {k: values[k] for k in sorted(values) if isinstance(values[k], (int, float, str, bool))}, **extra}


def hf_causal_lm(config, dtype: str = "bf16", tp_size: int = 1, recording: Recording | None = None) -> torch.nn.Module:
    """The causal-LM of ``config`` on the meta device, in ``dtype``, sharded to one TP rank."""
    from transformers import AutoModelForCausalLM

    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model = model.to(DTYPES_BY_NAME[dtype])
    model.train()
    if tp_size > 1:
        try:
            shard_tensor_parallel(model, tp_size, recording if recording is not None else Recording())
        except ValueError as exc:
            raise HarvestError(f"--tp {tp_size}: {exc}") from None
    return model


def harvest_catalog(
    config, batch: int = 1, seq_len: int = 128, dtype: str = "bf16", tp_size: int = 1, budget: int = 64
) -> dict[str, Any]:
    """Harvest one training step (forward + backward, loss on the tokens) of a config's causal LM."""
    if dtype not in DTYPES_BY_NAME or dtype.startswith("int") or dtype == "bool":
        raise HarvestError(f"--dtype {dtype}: choose one of fp32, bf16, fp16")
    recording = Recording()
    model = hf_causal_lm(config, dtype, tp_size, recording)
    vocab = int(getattr(config, "vocab_size", 1000))
    ids = torch.randint(0, vocab, (batch, seq_len), device="meta")
    harvest(model, {"input_ids": ids, "labels": ids}, recording=recording)
    described = describe_config(config, name=type(model).__name__, tp_size=tp_size, batch=batch, seq_len=seq_len, dtype=dtype, device="meta")
    return build_catalog(recording, described, budget)


def load_factory(spec: str) -> Callable[[], tuple[torch.nn.Module, Any]]:
    """``package.module:function`` returning (model, example inputs) for a model that is not from HF."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise HarvestError(f"--module {spec}: expected package.module:function")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise HarvestError(f"--module {spec}: {exc}") from None


def harvest_module(factory: Callable[[], tuple[torch.nn.Module, Any]], name: str, budget: int = 64) -> dict[str, Any]:
    """Harvest a (model, inputs) pair from a factory; the model's own device and dtype are used."""
    model, inputs = factory()
    recording = harvest(model, inputs if isinstance(inputs, (tuple, dict)) else (inputs,))
    parameter = next(model.parameters(), None)
    described = {"name": name, "config_hash": hashlib.sha256(repr(model).encode()).hexdigest()[:16],
                 "device": str(parameter.device) if parameter is not None else "cpu"}
    return build_catalog(recording, described, budget)
