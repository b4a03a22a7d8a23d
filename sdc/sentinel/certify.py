"""Checkpoint certification: a checkpoint saved during training is a *candidate* until a later
complete check cycle (parameters and optimizer state compared, a recompute audit) passes with
no disagreement on any replica; then its manifest says *certified*. A disagreement first
makes it *rejected*: resume from an older certified one.

The manifest is a small JSON file beside the checkpoint (``<file>.sdc-manifest.json``, or
``sdc-manifest.json`` inside a checkpoint directory) with the step, the digest of every
saved tensor and the status. ``verify`` recomputes the digests of what is on disk against it
(storage corruption) and ``newest_certified`` tells which checkpoint to resume from.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from sdc.digest import digest

log = logging.getLogger(__name__)

MANIFEST_NAME = "sdc-manifest.json"
FORMAT = 1
# A certifying cycle has compared everything replicas hold and recomputed a piece of work
# (the audit, where the sentinel has a replay function to run one with).
CERTIFYING_CHECKS = {"params", "audit"}


class CheckpointError(ValueError):
    """A checkpoint or manifest that cannot be read; the message says which and why."""


def manifest_path(checkpoint: Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint / MANIFEST_NAME if checkpoint.is_dir() else checkpoint.with_name(checkpoint.name + ".sdc-manifest.json")


def flat_tensors(state: Mapping[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a (nested) state dict, by dotted key."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            out[name] = value.detach()
        elif isinstance(value, Mapping):
            out.update(flat_tensors(value, name + "."))
    return out


def state_digests(state: Mapping[str, Any]) -> dict[str, str]:
    return {k: digest(v.cpu() if v.device.type != "cpu" else v) for k, v in sorted(flat_tensors(state).items())}


def write_manifest(checkpoint: Path, manifest: dict) -> None:
    """Write the manifest atomically: a reader sees the old one or the new one, never half."""
    path = manifest_path(checkpoint)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_manifest(checkpoint: Path) -> dict:
    path = manifest_path(checkpoint)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no manifest (the checkpoint was not saved with the sdc sentinel)") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("digests"), dict):
        raise CheckpointError(f"{path}: not an sdc checkpoint manifest (no 'digests')")
    return manifest


@dataclass
class Candidate:
    path: Path | None
    step: int
    digests: dict[str, str]
    status: str = "candidate"
    passed: set[str] = field(default_factory=set)  # checks passed since the checkpoint


@dataclass
class Certifier:
    """Tracks a rank's saved checkpoints and certifies them from later step verdicts.

    Only the group's first replica writes manifests (every replica sees the same verdicts).
    """

    writes: bool
    job_id: str
    candidates: list[Candidate] = field(default_factory=list)

    def saved(self, path: str | Path, step: int, model: torch.nn.Module) -> None:
        """A checkpoint of ``model`` was (or is being) written at ``path`` after ``step``."""
        self.pending(step, model)
        self.place(path)

    def pending(self, step: int, model: torch.nn.Module) -> None:
        """A checkpoint is being saved whose path is not known yet (Lightning)."""
        state = getattr(model, "module", model).state_dict()
        self.candidates.append(Candidate(None, step, state_digests(state)))

    def place(self, path: str | Path) -> None:
        """The path of the newest checkpoint without one; its candidate manifest is written."""
        for candidate in reversed(self.candidates):
            if candidate.path is None:
                candidate.path = Path(path)
                self._write(candidate, None)
                return

    def _write(self, candidate: Candidate, by_step: int | None) -> None:
        if not self.writes or candidate.path is None:
            return
        try:
            write_manifest(candidate.path, {
                "format": FORMAT, "job_id": self.job_id, "step": candidate.step, "status": candidate.status,
                "certified_by_step": by_step, "digests": candidate.digests,
            })
        except OSError:
            log.exception("sdc sentinel: could not write the manifest of %s", candidate.path)

    def on_verdict(self, sentinel: Any, verdict: Any) -> None:
        """Certify a candidate once every certifying check has passed after its step, with no
        disagreement in between; reject it on a disagreement first."""
        if not verdict.ok:
            for c in self.candidates:
                if c.status == "candidate":
                    c.status = "rejected"
                    self._write(c, verdict.step)
            self.candidates = [c for c in self.candidates if c.path is None]
            return
        audits = bool(sentinel.config.audit_every) and sentinel.replayer.replay_fn is not None
        needed = CERTIFYING_CHECKS if audits else {"params"}
        for c in self.candidates:
            if c.status == "candidate" and c.step < verdict.step:
                c.passed |= set(verdict.checks)
                if needed <= c.passed and c.path is not None:
                    c.status = "certified"
                    self._write(c, verdict.step)
        self.candidates = [c for c in self.candidates if c.status == "candidate"]


def certifier_for(sentinel: Any) -> Certifier:
    """The sentinel's certifier, created on first use."""
    if sentinel.certifier is None:
        sentinel.certifier = Certifier(writes=sentinel.comm.index == 0, job_id=sentinel.job_id)
    return sentinel.certifier


# ---------------------------------------------------------------------- verification


@dataclass(frozen=True)
class Verification:
    """What ``verify`` found for one checkpoint."""

    path: Path
    step: int
    status: str  # the manifest's: candidate | certified | rejected
    compared: int
    mismatched: tuple[str, ...]
    missing: tuple[str, ...]  # in the manifest, not on disk (e.g. tied weights saved once)

    @property
    def intact(self) -> bool:
        return self.compared > 0 and not self.mismatched


def load_tensors(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The tensors of a saved checkpoint: a ``torch.save`` file (a Lightning ``.ckpt``'s
    ``state_dict``), a Hugging Face checkpoint directory, or a ``torch.distributed.checkpoint``
    directory."""
    checkpoint = Path(checkpoint)
    try:
        if checkpoint.is_dir():
            weights = [checkpoint / n for n in ("model.safetensors", "pytorch_model.bin") if (checkpoint / n).exists()]
            if weights and weights[0].suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(str(weights[0]))
            if weights:
                return flat_tensors(torch.load(weights[0], map_location="cpu", weights_only=True))
            if (checkpoint / ".metadata").exists():
                return _load_dcp(checkpoint)
            raise CheckpointError(f"{checkpoint}: no model.safetensors, pytorch_model.bin or .metadata inside")
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{checkpoint}: cannot be read as a checkpoint ({type(exc).__name__}: {exc})") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # Lightning
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{checkpoint}: holds a {type(state).__name__}, not a state dict")
    return flat_tensors(state)


def _load_dcp(directory: Path) -> dict[str, torch.Tensor]:
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "state.pt"
        dcp_to_torch_save(str(directory), str(target))
        return flat_tensors(torch.load(target, map_location="cpu", weights_only=True))


def verify(checkpoint: Path) -> Verification:
    """Recompute the digests of a saved checkpoint against its manifest."""
    manifest = read_manifest(checkpoint)
    on_disk = load_tensors(checkpoint)
    expected: dict[str, str] = manifest["digests"]
    # Keys as the saver named them, or with a wrapper's prefix (Lightning saves "net.0.weight").
    by_suffix = {k: v for k, v in on_disk.items()}
    mismatched, missing, compared = [], [], 0
    for key, want in sorted(expected.items()):
        tensor = by_suffix.get(key)
        if tensor is None:
            missing.append(key)
            continue
        compared += 1
        if digest(tensor) != want:
            mismatched.append(key)
    return Verification(Path(checkpoint), int(manifest.get("step", -1)), str(manifest.get("status", "candidate")),
                        compared, tuple(mismatched), tuple(missing))


def checkpoints_in(directory: Path) -> list[Path]:
    """Checkpoints under ``directory`` that have a manifest (the directory itself included)."""
    directory = Path(directory)
    found = [p.parent for p in directory.glob(f"*/{MANIFEST_NAME}")] + [
        p.with_name(p.name.removesuffix(".sdc-manifest.json")) for p in directory.glob("*.sdc-manifest.json")]
    if (directory / MANIFEST_NAME).exists():
        found.append(directory)
    return sorted(set(found))


def newest_certified(results: list[Verification]) -> Verification | None:
    """The checkpoint to resume from: certified by the sentinel and intact on disk, newest step."""
    good = [r for r in results if r.status == "certified" and r.intact]
    return max(good, key=lambda r: r.step, default=None)
