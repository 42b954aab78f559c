"""`python -m recsys.cli` (e.g. under `accelerate launch -m recsys.cli score ...`)."""

import sys

from recsys.cli import main

sys.exit(main())
