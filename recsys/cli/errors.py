"""How recsys entry points (`recsys score|evaluate`, the recommender recipes) end on a user mistake.

A user mistake (a path that does not exist, a model directory of the wrong kind, data that does not fit, a column,
an option value) prints ONE line on stderr, `PROG: error: <what is wrong and what to do>`, and exits with status 2
(argparse's status for bad arguments); a traceback would only bury the message. Anything else is a bug and keeps its
traceback. `--debug` on the command line or `GENTOK_DEBUG=1` in the environment shows the traceback of a user mistake
too. Warnings print as one line, `PROG: warning: ...`, without Python's source line.

User mistakes are what the library raises for bad input: `ValueError` (recsys's `DataError` and gentok's
`CheckpointError` are ValueErrors) and the OS errors of paths (`USER_ERRORS`).

This mirrors `gentok.cli.errors` (the policy of the `gentok` command and the image/audio/DNA recipes) until both
entry points share one module.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Callable

DEBUG_FLAG = "--debug"
DEBUG_ENV = "GENTOK_DEBUG"
USAGE_STATUS = 2
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """Declare `--debug` so that --help lists it (`call` reads it and removes it before `main` sees the arguments)."""
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help=f"show the traceback of an error (also: {DEBUG_ENV}=1 in the environment)")


def debug_requested(argv: list[str]) -> bool:
    """`--debug` in `argv`, or `GENTOK_DEBUG` set to anything but '', '0', 'false' or 'no'."""
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def one_line(error: BaseException) -> str:
    """The message of a user mistake on one line; an OS error as `PATH: what is wrong`."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{os.fsdecode(error.filename)}: {error.strerror[:1].lower()}{error.strerror[1:]}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def call(main: Callable[[list[str]], object], argv: list[str] | None = None, prog: str = "recsys") -> int:
    """Run `main(argv)` (without `--debug`) under the policy above; returns its status (an int it returns, else 0),
    or 2 after printing the one line of a user mistake."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    formatter = warnings.formatwarning
    if not debug:
        warnings.formatwarning = lambda message, *_, **__: f"{prog}: warning: {one_line(Warning(str(message)))}\n"
    try:
        status = main(argv)
    except USER_ERRORS as err:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return USAGE_STATUS
    finally:
        warnings.formatwarning = formatter
    return status if isinstance(status, int) else 0


def run(main: Callable[[list[str]], object], argv: list[str] | None = None, prog: str = "recsys") -> None:
    """`call`, then exit with its status: the last line of a recipe (`run(main, prog="sasrec")`)."""
    sys.exit(call(main, argv, prog))
