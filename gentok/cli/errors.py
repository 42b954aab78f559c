"""The one error policy of every gentok entry point: the `gentok` command, the recipes and the engines' commands.

A user mistake (a path that does not exist, an option the model does not take, an output location that is taken, a
column or a type that does not fit) ends the command with ONE line on stderr, `PROG: error: <the problem and its
fix>`, and exit status 2 (argparse's status for bad arguments): the message is the whole story, a traceback would
bury it. A bug still ends with its traceback. `--debug` on the command line, or `GENTOK_DEBUG=1` in the
environment, shows the traceback of a user mistake too. Warnings (e.g. "averaged the channels of 2 stereo files")
print as one line `PROG: warning: ...`, without Python's source line.

User mistakes are `UsageError` (raised by entry points) and what the library raises for bad input (`USER_ERRORS`):
`ValueError` (the library's validation convention; `CheckpointError` and the data errors of packages built on gentok are ValueErrors),
`FileNotFoundError`, `FileExistsError`, `IsADirectoryError`, `NotADirectoryError` and `PermissionError`.

An entry point adopts the policy in one line:

    from gentok.cli.errors import run

    def main(argv: list[str] | None = None) -> int | None: ...   # parse argv, do the work; raise on bad input

    if __name__ == "__main__":
        run(main, prog="titok")   # argv: sys.argv[1:] without --debug; exits 0, 2 (user mistake) or 1 (bug)

`call(main, argv, prog)` does the same but returns the status instead of exiting (for a `main` that tests call).
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from collections.abc import Callable

from gentok.checkpoint import CheckpointError

DEBUG_FLAG = "--debug"
DEBUG_ENV = "GENTOK_DEBUG"
USAGE_STATUS = 2  # argparse's exit status for bad arguments


class UsageError(ValueError):
    """A user mistake an entry point found: the message names the problem and the fix, in one line."""


USER_ERRORS = (ValueError, CheckpointError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
               PermissionError)


def debug_requested(argv: list[str] | None = None) -> bool:
    """Whether `--debug` is in `argv` or `GENTOK_DEBUG` is set to anything but '', '0' or 'false'."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    return DEBUG_FLAG in (argv or []) or env not in ("", "0", "false", "no")


def describe(error: BaseException) -> str:
    """The one line shown for a user mistake: the message, or for an OS error `PATH: what is wrong`."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{os.fsdecode(error.filename)}: {error.strerror[:1].lower()}{error.strerror[1:]}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())  # one line, whatever the message held


def _one_line_warnings(prog: str):
    """A `warnings.formatwarning` that gives `PROG: warning: message` (Python's own adds the file and source line).
    Replacing the formatter, not `showwarning`, leaves a caller that records warnings (pytest.warns) unaffected."""
    def format_warning(message, category, filename, lineno, line=None):
        return f"{prog}: warning: {describe(Warning(str(message)))}\n"

    return format_warning


def call(main: Callable[[list[str]], object], argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run `main(argv)` under the policy above and return its exit status (what `run` exits with).

    Args:
        main: the entry point; it returns an exit status (an int) or anything else for 0, and raises on bad input.
        argv: the arguments (default `sys.argv[1:]`); `--debug` is taken out before `main` sees them.
        prog: the name the error line starts with (default: the script's file name without `.py`).
    Returns:
        `main`'s status, or 2 after printing the one line of a user mistake.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    prog = prog or os.path.splitext(os.path.basename(sys.argv[0]))[0] or "gentok"
    formatter = warnings.formatwarning
    if not debug:
        warnings.formatwarning = _one_line_warnings(prog)
    try:
        status = main(argv)
    except USER_ERRORS as e:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {describe(e)}", file=sys.stderr)
        return USAGE_STATUS
    finally:
        warnings.formatwarning = formatter
    return status if isinstance(status, int) else 0


def run(main: Callable[[list[str]], object], argv: list[str] | None = None, prog: str | None = None) -> None:
    """`call(main, argv, prog)`, then exit the process with its status: the last line of an entry point."""
    sys.exit(call(main, argv, prog))
