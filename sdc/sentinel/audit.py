"""Recompute audits: every replica recomputes the same small piece of work — forward and
backward of a slice of one rank's batch, with the same parameters and the same RNG seed,
under deterministic kernels — and the replicas compare the digests of the resulting loss and
local gradients bit for bit.

This sees what the cross-replica gradient check cannot: a fault in one rank's forward or
backward compute is averaged into everyone's gradients by the all-reduce, but in an audit
each rank computes the same thing alone, so the faulty chip's digest stands out and the
majority vote names it, with the first parameter (in model order) whose gradient differs.

The slice's owner rotates with every audit, so over ``world`` audits every rank's data is
used. Every parameter's gradient is compared at every audit, so every layer is covered each
time. Rotating the compared layers instead was weighed and not done: the audit's cost is the
recompute (forward and backward of the slice), not the digests (one pass over the gradients,
a few percent of the audit), and a weight-gradient fault (a corrupted dW GEMM) shows only in
its own layer's digest, so a rotation would see it only every few audits. When audits run is
the check schedule's decision (``schedule.py``, one cost budget with the other checks).

Each rank computes the audit ``repeats`` times (default 2) and compares its own results: the
chip's own repeats are a judge that needs no majority. A fault that hits a share p of the
forward passes (an intermittent unit) is caught by one audit with probability 1 - (1 - p)^2
instead of p, and the rank whose repeats differ is named ``transient`` at once, with two
replicas as with many: the others reproducing theirs show the computation is reproducible on a
healthy chip. Under deterministic kernels a healthy chip reproduces its audit bit for bit;
where an op had no deterministic variant the repeats may differ and are not judged. A lone
replica whose repeats differ is reported ``unattributed`` with a probe case for the next
sweep: alone, a chip fault and a kernel nondeterministic without saying so look alike.

With two replicas an even split is resolved by
a second opinion: both recompute the audit again and a rank whose result does not reproduce
is named; if both reproduce, the split stays ``unattributed`` and the audit is handed to the
fleet as a probe case (details ``second_opinion``).

Ops with no deterministic variant (warned about by ``torch.use_deterministic_algorithms``
in warn-only mode) make the audit fall back to comparing float statistics within a
tolerance, recorded as ``comparison: tolerance``.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch

from sdc.digest import combine_sums, tensor_sums, word_count
from sdc.sentinel.comm import Collectives
from sdc.sentinel.identity import Peers
from sdc.sentinel.replayer import Replayer, _set_rng, buffers_kept, capture_rng, to_device
from sdc.sentinel.vote import Finding, majority_vote

log = logging.getLogger(__name__)

# Relative spread of a gradient's norm between replicas that the tolerance comparison accepts.
TOLERANCE = 1e-4
_NONDETERMINISTIC = ("deterministic", "nondeterministic")


def audit_slice(batch: Any, samples: int) -> Any:
    """The first ``samples`` rows of every tensor in ``batch`` (dicts, lists, tuples followed)."""
    if isinstance(batch, torch.Tensor):
        return batch[:samples] if batch.dim() > 0 else batch
    if isinstance(batch, dict):
        return {k: audit_slice(v, samples) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        parts = [audit_slice(v, samples) for v in batch]
        return type(batch)(*parts) if hasattr(batch, "_fields") else type(batch)(parts)
    return batch


def audit_seed(step: int) -> int:
    """The same seed on every rank, different at every audit (dropout masks vary, identically)."""
    return (0x5DC0 + 1_000_003 * step) % (2**63)


@contextmanager
def deterministic_kernels() -> Iterator[list]:
    """Deterministic algorithms for the audit only; yields the warnings raised meanwhile.

    Warn-only mode: an op without a deterministic variant warns instead of raising, and the
    audit falls back to a tolerance comparison. Every setting is put back afterwards, so the
    training steps keep their own (faster) kernels.
    """
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = torch.backends.cudnn
    cudnn_flags = (cudnn.deterministic, cudnn.benchmark)
    workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if workspace is None:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # cuBLAS's deterministic workspace
    torch.use_deterministic_algorithms(True, warn_only=True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        cudnn.deterministic, cudnn.benchmark = cudnn_flags
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


@contextmanager
def without_dropout(model: torch.nn.Module | None) -> Iterator[None]:
    """Dropout off for the audit: a dropped element would hide a corrupted one from it.

    Only dropout modules are switched to eval mode (BatchNorm keeps using batch statistics,
    as in the step), and each module's mode is put back afterwards.
    """
    dropouts = [m for m in (model.modules() if model is not None else ()) if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    modes = [m.training for m in dropouts]
    for m in dropouts:
        m.training = False
    try:
        yield
    finally:
        for m, mode in zip(dropouts, modes):
            m.training = mode


def warm_up_deterministic_mode() -> None:
    """The first ``torch.use_deterministic_algorithms(True)`` of a process takes seconds (it
    loads compiler configuration); pay it when the sentinel is built, not at the first audit."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


class Auditor:
    """Runs recompute audits over the group; every rank calls ``run`` at the same steps.

    Args:
        comm: the group's collectives.
        replayer: supplies the replay function, parameters and buffers.
        peers: who each replica is.
        samples: rows of the owner's batch the audit recomputes.
    """

    def __init__(self, comm: Collectives, replayer: Replayer, peers: Peers, samples: int, model: torch.nn.Module | None = None,
                 repeats: int = 2):
        self.comm, self.replayer, self.peers, self.samples = comm, replayer, peers, samples
        self.model = model
        self.repeats = max(1, repeats)
        self.audits = 0
        self.rounds = 0  # audits attempted, the same count on every rank: rotates the owner

    @property
    def names(self) -> list[str]:
        return self.replayer.names + ["loss"]

    def owner(self) -> int:
        return self.rounds % self.comm.size

    def _compute(self, batch: Any, step: int) -> tuple[torch.Tensor, list[int], list[torch.Tensor], bool]:
        """(per-tensor digests, their word counts, the tensors, nondeterministic) of the audit here."""
        replayer = self.replayer
        params = replayer.params
        device = replayer.device
        saved = capture_rng(device)
        try:
            torch.manual_seed(audit_seed(step))
            with deterministic_kernels() as caught, without_dropout(self.model):
                with buffers_kept(replayer.buffers), torch.enable_grad():
                    loss = replayer.replay_fn(to_device(batch, device))
                    grads = torch.autograd.grad(loss, list(params), allow_unused=True)
        finally:
            _set_rng(saved)
        tensors = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)] + [loss.detach().reshape(1)]
        nondeterministic = any(any(w in str(c.message) for w in _NONDETERMINISTIC) for c in caught)
        return tensor_sums(tensors), [word_count(t) for t in tensors], tensors, nondeterministic

    def run(self, step: int, batch: Any, schedule: dict | None = None) -> list[Finding]:
        """One audit at ``step``: the owner's slice of ``batch``, recomputed by everyone.
        ``schedule``: when audits run (the check schedule's details), for the events."""
        owner = self.owner()
        self.rounds += 1
        piece = None
        if self.comm.index == owner and batch is not None:
            try:
                piece = to_device(audit_slice(batch, self.samples), torch.device("cpu"))
            except Exception:
                log.exception("sdc sentinel: could not cut the audit slice at step %s", step)
        piece = self.comm.broadcast_object(piece, owner)
        if piece is None:
            return []  # decided from the broadcast value: every rank skips together
        sums, lengths, tensors, nondet, error = self._attempt(piece, step)
        digest = (0, 0) if error else tuple(int(v) for v in combine_sums(sums, lengths))
        reduced = self.comm.max_(torch.tensor([digest[0], digest[1], ~digest[0], ~digest[1], int(error), int(nondet)],
                                              dtype=torch.int64)).tolist()
        if reduced[4]:
            log.warning("sdc sentinel: step %s: a rank could not run the audit; skipped by all", step)
            return []
        self.audits += 1
        when = schedule or {}
        base = {"owner_rank": self.peers.rank(owner), "samples": self.samples, "audits": self.audits, **when,
                "next_audit_step": when.get("next_check_step"), "repeats": self.repeats}
        if reduced[5]:
            norms = torch.stack([t.double().norm() for t in tensors]).cpu() if tensors else torch.zeros(len(self.names), dtype=torch.float64)
            return [self._tolerance_vote(step, norms, base)]
        del tensors  # the repeats need only the digests: no second set of gradients held at once
        findings = self._repeats(step, piece, sums, base)
        if reduced[0] == ~reduced[2] and reduced[1] == ~reduced[3]:
            return findings or [Finding("audit", "ok", (), {**base, "comparison": "bit-exact"})]
        everyone = self.comm.gather(sums.to(torch.int64)).cpu().tolist()
        result = majority_vote([[tuple(p) for p in replica] for replica in everyone], self.names)
        base = {**base, "comparison": "bit-exact"}
        if result.diagnosis == "divergence":
            suspects = tuple(self.peers.suspect(i, names) for i, names in result.minority.items())
            return [Finding("audit", "divergence", suspects, {**base, "first_param": {
                str(self.peers.rank(i)): names[0] for i, names in result.minority.items()}}), *findings]
        split = Finding("audit", "unattributed", (), {**base, "disagreeing_params": list(result.unattributed),
                                                       "first_param": result.unattributed[0]})
        if findings and findings[0].diagnosis == "transient":
            return [split, *findings]  # the rank whose repeats differ is the answer: no second opinion needed
        return [split, self._second_opinion(step, piece, sums, base, result.unattributed)]

    def _repeats(self, step: int, piece: Any, first: torch.Tensor, base: dict) -> list[Finding]:
        """The audit's further repeats on every rank; a finding if some rank's differ.

        Under deterministic kernels a healthy chip reproduces its own result bit for bit, so a
        rank whose repeats differ computed wrong at least once. Every rank enters the exchange,
        whatever failed here (a failed repeat counts as no answer, not as a difference)."""
        if self.repeats < 2:  # the same setting on every rank: none of them enters the exchange
            return []
        unstable: list[str] = []  # tensors whose digest differs between this rank's repeats
        reference = first.cpu().tolist()
        for _ in range(self.repeats - 1):
            again, _, _, _, error = self._attempt(piece, step)
            if error:
                break
            unstable = unstable or [n for n, a, b in zip(self.names, again.cpu().tolist(), reference) if a != b]
        if not self.comm.max_(torch.tensor([int(bool(unstable))], dtype=torch.int64)).tolist()[0]:
            return []
        rows = self.comm.gather_objects(unstable)
        flaky = [i for i, names in enumerate(rows) if names]
        details = {**base, "comparison": "bit-exact", "check": "repeats",
                   "repeats_differ": {str(self.peers.rank(i)): rows[i][:8] for i in flaky}}
        if self.comm.size == 1:
            # A lone replica: nothing shows the computation reproducible on a healthy chip, so
            # a chip fault and a kernel nondeterministic without saying so look alike. Seen and
            # recorded, blamed on no one; the next sweep of this chip decides.
            probe_case = {"kind": "sentinel_audit", "step": step, "owner_rank": base["owner_rank"],
                          "samples": self.samples, "params": rows[0][:8]}
            return [Finding("audit", "unattributed", (), {**details, "second_opinion": "fleet", "probe_case": probe_case,
                                                          "chip_id": self.peers.suspect(0).chip_id,
                                                          "why": "the audit's repeats differ on the only replica"})]
        if len(flaky) == self.comm.size:
            # Every rank differs from itself: the software, not a chip (a kernel nondeterministic
            # without saying so), or a fault everywhere at once.
            return [Finding("audit", "unattributed", (), {**details, "why": "the audit does not reproduce on any rank"})]
        suspects = tuple(self.peers.suspect(i, tuple(rows[i])) for i in flaky)
        log.warning("sdc sentinel: step %s: the audit's repeats differ on rank(s) %s", step, [self.peers.rank(i) for i in flaky])
        return [Finding("audit", "transient", suspects, {**details, "why": "the audit's repeats differ on this rank"})]

    def _attempt(self, piece: Any, step: int) -> tuple[torch.Tensor, list[int], list[torch.Tensor], bool, bool]:
        """The audit here; a failure becomes the error flag (the collectives still run)."""
        n = len(self.names)
        try:
            sums, lengths, tensors, nondet = self._compute(piece, step)
            return sums, lengths, tensors, nondet, False
        except Exception:
            log.exception("sdc sentinel: audit failed on this rank at step %s", step)
            return torch.zeros((n, 2), dtype=torch.int64), [1] * n, [], False, True

    def _second_opinion(self, step: int, piece: Any, first: torch.Tensor, base: dict, params: Sequence[str]) -> Finding:
        """No strict majority: every rank recomputes; a rank that does not reproduce itself is named."""
        again, _, _, _, error = self._attempt(piece, step)
        changed = None if error else bool((again.cpu() != first.cpu()).any())
        rows = self.comm.gather_objects(changed)
        details = {**base, "disagreeing_params": list(params), "replicas": [self.peers.rank(i) for i in range(self.comm.size)]}
        flaky = [i for i, r in enumerate(rows) if r]
        if flaky and len(flaky) < self.comm.size and all(r is not None for r in rows):
            suspects = tuple(self.peers.suspect(i, params) for i in flaky)
            return Finding("audit", "transient", suspects, {**details, "second_opinion": "recompute",
                                                             "why": "the audit does not reproduce on this rank"})
        # Each replica reproduces its own answer: only a third copy can say which is right.
        probe_case = {"kind": "sentinel_audit", "step": step, "owner_rank": base["owner_rank"],
                      "samples": self.samples, "params": list(params)[:8]}
        return Finding("audit", "unattributed", (), {**details, "second_opinion": "fleet", "probe_case": probe_case,
                                                     "why": "each replica reproduces its own result"})

    def _tolerance_vote(self, step: int, norms: torch.Tensor, base: dict) -> Finding:
        """Ops without a deterministic variant ran: compare gradient norms within TOLERANCE."""
        everyone = self.comm.gather(norms.to(torch.float64)).cpu()
        middle = everyone.median(dim=0).values
        off = (everyone - middle).abs() > TOLERANCE * middle.abs() + 1e-30
        details = {**base, "comparison": "tolerance", "tolerance": TOLERANCE}
        minority = {i: [self.names[j] for j in off[i].nonzero().flatten().tolist()] for i in range(self.comm.size) if off[i].any()}
        if not minority:
            return Finding("audit", "ok", (), details)
        if 2 * len(minority) >= self.comm.size:
            return Finding("audit", "unattributed", (), {**details, "replicas_off": [self.peers.rank(i) for i in minority]})
        suspects = tuple(self.peers.suspect(i, names) for i, names in minority.items())
        return Finding("audit", "divergence", suspects, {**details, "first_param": {str(self.peers.rank(i)): n[0] for i, n in minority.items()}})
