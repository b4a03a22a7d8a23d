"""Is the sentinel's recompute audit bit-reproducible on this device?

An audit compares, bit for bit, the loss and parameter gradients each replica recomputes on
the same slice. That only works if one chip gives identical bits when it recomputes the same
thing. This runs the same forward + backward (a small transformer encoder with an embedding,
whose backward is a scatter-add, nondeterministic on CUDA without deterministic algorithms)
``--repeats`` times, under the audit's own ``deterministic_kernels()`` scope and without it,
and prints how many distinct gradient digests each gave. A healthy chip must give exactly one
under the audit's scope; more than one there means the audit would raise false alarms (and the
script exits 3).

Run: ``.venv/bin/python benchmarks/audit_repeats.py [--device cuda:0] [--repeats 20]``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import torch

from sdc.digest import tensor_sums
from sdc.sentinel.audit import audit_seed, deterministic_kernels


def build(device: torch.device, vocab: int, width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(width, nhead=8, dim_feedforward=4 * width, dropout=0.0, batch_first=True)
    return torch.nn.Sequential(torch.nn.Embedding(vocab, width), torch.nn.TransformerEncoder(layer, num_layers=2),
                               torch.nn.Linear(width, vocab)).to(device)


def gradient_digest(model: torch.nn.Module, tokens: torch.Tensor, vocab: int) -> bytes:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(audit_seed(7))
    logits = model(tokens[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), tokens[:, 1:].reshape(-1))
    loss.backward()
    grads = [loss.detach().reshape(1)] + [p.grad for p in model.parameters()]
    return tensor_sums(grads).cpu().numpy().tobytes()


def distinct_digests(model, tokens, vocab: int, repeats: int, scope) -> int:
    seen = set()
    for _ in range(repeats):
        with scope():
            seen.add(gradient_digest(model, tokens, vocab))
    return len(seen)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    device, vocab = torch.device(args.device), 4096
    model = build(device, vocab, args.width)
    # Repeated tokens so the embedding's backward adds into the same rows from many places.
    tokens = torch.randint(0, 64, (8, args.tokens + 1), generator=torch.Generator().manual_seed(1)).to(device)
    audited = distinct_digests(model, tokens, vocab, args.repeats, deterministic_kernels)
    free = distinct_digests(model, tokens, vocab, args.repeats, contextlib.nullcontext)
    print(f"device {device}: {args.repeats} recomputes of forward+backward "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)")
    print(f"  distinct gradient digests under the audit's deterministic scope: {audited} (must be 1)")
    print(f"  distinct gradient digests with the training step's kernels:       {free}")
    return 0 if audited == 1 else 3


if __name__ == "__main__":
    sys.exit(main())
