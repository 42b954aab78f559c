"""`python -m gentok.cli ...`: the `gentok` command."""

import sys

from gentok.cli import main

sys.exit(main())
