"""The ``sdc`` command line: a thin layer that parses, calls plain functions, prints, exits.

Exit codes everywhere: 0 healthy, 1 fault found, 2 unknown or error (see sdc.exitcodes). Any
error, expected or not, leaves through ``sdc.cli.context.error_boundary``: one line, exit 2.
"""

from __future__ import annotations

import logging

import click

import sdc
from sdc.cli.lazy import LazyGroup


class SdcGroup(LazyGroup):
    """The top-level group: every command runs inside the one error boundary (exit 2, one line)."""

    def invoke(self, ctx: click.Context):
        from sdc.cli.context import error_boundary

        with error_boundary():
            return super().invoke(ctx)


@click.group(cls=SdcGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(sdc.__version__, prog_name="sdc")
@click.option("--db", envvar="SDC_DATABASE_URL", help="Database URL (default: embedded SQLite in the data directory).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file (default ~/.config/sdc/config.toml).")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output where a command supports it.")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("--debug", is_flag=True, envvar="SDC_DEBUG", help="Print the full traceback of an unexpected error.")
@click.pass_context
def cli(ctx: click.Context, db: str | None, config_path: str | None, json_output: bool, verbose: int, debug: bool) -> None:
    """sdc — find the chips that silently compute wrong, slow or inconsistent results."""
    from sdc.cli.context import AppContext

    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)], format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = AppContext(db=db, config=config_path, json_output=json_output, debug=debug)


# A "name=module:attribute" string is imported only when that command runs (see LazyGroup):
# use it for commands whose module imports torch, so `sdc --version` and `sdc check` stay fast.
for command in (
    "db=sdc.cli.store:db_group",
    "ingest=sdc.cli.store:ingest_command",
    "export=sdc.cli.store:export_command",
    "flush=sdc.cli.store:flush_command",
    "sweep=sdc.cli.sweep:sweep_command",
    "agent=sdc.cli.ops:agent_command",
    "report=sdc.cli.ops:report_command",
    "check=sdc.cli.ops:check_command",
    "analyze=sdc.cli.analysis:analyze_command",
    "quarantine=sdc.cli.analysis:quarantine_group",
    "status=sdc.cli.analysis:status_command",
    "simulate=sdc.cli.analysis:simulate_command",
    "harvest=sdc.cli.precision:harvest_command",
    "precision=sdc.cli.precision:precision_command",
    "checkpoint=sdc.cli.checkpoint:checkpoint_group",
):
    cli.add(command)


def main() -> None:
    cli(prog_name="sdc")
