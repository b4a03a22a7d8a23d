"""``sdc checkpoint verify PATH``: recompute a saved checkpoint's digests against the manifest
the sentinel wrote beside it (storage corruption), and say which certified checkpoint is the
newest one to resume from. Exit 0: every checkpoint intact; 1: a checkpoint's bytes changed
on disk; 2: nothing could be verified (no manifest, unreadable file)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sdc.exitcodes import ExitCode


def _safe(text: object) -> str:
    """A path or key as printable ASCII (a file name may hold anything)."""
    return ascii(str(text))[1:-1]


@click.group("checkpoint")
def checkpoint_group() -> None:
    """Checkpoints written under the sentinel: verify them, find the one to resume from."""


@click.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
@click.pass_context
def verify_command(ctx: click.Context, path: Path) -> None:
    """Verify the checkpoint at PATH (a file or directory), or every checkpoint under PATH."""
    from sdc.sentinel.certify import CheckpointError, checkpoints_in, newest_certified, verify

    json_output = bool(getattr(ctx.find_root().obj, "json_output", False))
    if not path.exists():
        click.echo(f"checkpoint verify: {_safe(path)} does not exist", err=True)
        ctx.exit(ExitCode.UNKNOWN)
    targets = checkpoints_in(path) if path.is_dir() else [path]
    if not targets:
        click.echo(f"checkpoint verify: no sdc manifest under {_safe(path)} (save checkpoints with the sentinel's adapters)", err=True)
        ctx.exit(ExitCode.UNKNOWN)
    results, errors = [], []
    for target in targets:
        try:
            results.append(verify(target))
        except CheckpointError as exc:
            errors.append(str(exc))
    newest = newest_certified(results)
    if json_output:
        click.echo(json.dumps({
            "checkpoints": [{"path": str(r.path), "step": r.step, "status": r.status, "intact": r.intact,
                             "compared": r.compared, "mismatched": list(r.mismatched), "missing": list(r.missing)} for r in results],
            "errors": errors, "resume_from": str(newest.path) if newest else None}))
    else:
        for r in sorted(results, key=lambda r: r.step):
            state = "intact" if r.intact else ("CORRUPTED" if r.mismatched else "nothing compared")
            click.echo(f"{_safe(r.path)}  step {r.step}  {r.status}  {state} ({r.compared} tensors"
                       + (f", differ: {', '.join(_safe(k) for k in r.mismatched[:5])}" if r.mismatched else "") + ")")
        for error in errors:
            click.echo(f"checkpoint verify: {_safe(error)}", err=True)
        click.echo(f"resume from: {_safe(newest.path)} (step {newest.step})" if newest else "resume from: no certified, intact checkpoint")
    if any(r.mismatched for r in results):
        ctx.exit(ExitCode.FAULT)
    if errors or not any(r.intact for r in results):
        ctx.exit(ExitCode.UNKNOWN)
    ctx.exit(ExitCode.HEALTHY)


checkpoint_group.add_command(verify_command)
