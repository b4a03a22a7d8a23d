"""``python -m sdc``: the command line."""

from sdc.cli import main

main()
