"""A click group whose commands may be named as ``"name=module:attribute"`` and imported on use.

Why: several command modules import torch (seconds) at module level. ``sdc --version`` and
``sdc check`` (run by node-problem-detector every minute) must start in a fraction of that,
so their import path must not load those modules.
"""

from __future__ import annotations

import importlib

import click


class LazyGroup(click.Group):
    """``click.Group`` that also accepts lazy entries ``"name=package.module:command"``."""

    def __init__(self, *args, lazy_commands: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands: dict[str, str] = dict(lazy_commands or {})

    def add_lazy(self, entry: str) -> None:
        name, _, target = entry.partition("=")
        if not target or ":" not in target:
            raise ValueError(f"lazy command {entry!r}: expected 'name=module:attribute'")
        self.lazy_commands[name.strip()] = target.strip()

    def add(self, command: click.Command | str) -> None:
        """Register a command object now, or a lazy ``"name=module:attribute"`` entry."""
        if isinstance(command, str):
            self.add_lazy(command)
        else:
            self.add_command(command)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands and cmd_name not in self.commands:
            module_name, _, attribute = self.lazy_commands[cmd_name].partition(":")
            command = getattr(importlib.import_module(module_name), attribute)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)
