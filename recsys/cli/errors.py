"""How recsys entry points (`recsys score|evaluate`, the recommender recipes) end on a user mistake: gentok's one
policy (`gentok.cli.errors`: one line `PROG: error: ...` on stderr and exit status 2, `--debug` or `GENTOK_DEBUG=1`
for the traceback, warnings as one line), with `recsys` as the default program name."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from gentok.cli import errors as _policy
from gentok.cli.errors import DEBUG_ENV, DEBUG_FLAG, USAGE_STATUS, USER_ERRORS, debug_requested, describe

__all__ = ["DEBUG_ENV", "DEBUG_FLAG", "USAGE_STATUS", "USER_ERRORS", "add_debug_flag", "call", "debug_requested",
           "describe", "run"]


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """Declare `--debug` so that --help lists it (`call` reads it and removes it before `main` sees the arguments)."""
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help=f"show the traceback of an error (also: {DEBUG_ENV}=1 in the environment)")


def call(main: Callable[[list[str]], object], argv: list[str] | None = None, prog: str = "recsys") -> int:
    """`gentok.cli.errors.call` named `prog` (default `recsys`)."""
    return _policy.call(main, argv, prog)


def run(main: Callable[[list[str]], object], argv: list[str] | None = None, prog: str = "recsys") -> None:
    """`call`, then exit with its status: the last line of a recipe (`run(main, prog="sasrec")`)."""
    sys.exit(call(main, argv, prog))
