"""Command modules of the ``sdc`` CLI: each parses, calls plain functions, prints, exits."""
