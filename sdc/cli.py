"""The ``sdc`` command line: a thin layer that parses, calls plain functions, prints, exits.

Exit codes everywhere: 0 healthy, 1 fault found, 2 unknown or error (see sdc.exitcodes).
"""

from __future__ import annotations

import logging

import click

import sdc
from sdc.commands.lazy import LazyGroup


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(sdc.__version__, prog_name="sdc")
@click.option("--db", envvar="SDC_DATABASE_URL", help="Database URL (default: embedded SQLite in the data directory).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file (default ~/.config/sdc/config.toml).")
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output where a command supports it.")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, db: str | None, config_path: str | None, json_output: bool, verbose: int) -> None:
    """sdc — find the chips that silently compute wrong, slow or inconsistent results."""
    from sdc.commands.context import AppContext

    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)], format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = AppContext(db=db, config=config_path, json_output=json_output)


# A "name=module:attribute" string is imported only when that command runs (see LazyGroup):
# use it for commands whose module imports torch, so `sdc --version` and `sdc check` stay fast.
for command in (
    "db=sdc.commands.store_commands:db_group",
    "ingest=sdc.commands.store_commands:ingest_command",
    "export=sdc.commands.store_commands:export_command",
    "flush=sdc.commands.store_commands:flush_command",
    "sweep=sdc.commands.sweep_command:sweep_command",
    "agent=sdc.commands.ops_commands:agent_command",
    "report=sdc.commands.ops_commands:report_command",
    "check=sdc.commands.ops_commands:check_command",
    "analyze=sdc.commands.analysis_commands:analyze_command",
    "quarantine=sdc.commands.analysis_commands:quarantine_group",
    "status=sdc.commands.analysis_commands:status_command",
    "simulate=sdc.commands.analysis_commands:simulate_command",
):
    cli.add(command)


def main() -> None:
    cli(prog_name="sdc")
