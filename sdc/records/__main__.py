"""``python -m sdc.records --write-schemas [DIR]``: write the JSON Schema files."""

import sys

from sdc.records.schema import main

sys.exit(main(sys.argv[1:]))
