"""What the engine runners and their jobs share: naming output by content, atomic Parquet writes, the per-process
model cache, and fault injection for tests.

Why outputs are named by content: engines retry a failed task (and Spark may run a speculative copy), so the same
task can run twice. When a task's output file is named by a hash of its input (or by its partition number, for a
partition that always holds the same rows) and written atomically, a second run replaces the file with identical
bytes: rows are neither lost (the retry writes them) nor duplicated (there is one name), and a rerun of the whole
job skips tasks whose file exists.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import import_module
from pathlib import Path

ENGINES = ("local", "ray", "spark")
FAIL_ONCE_ENV = "GENTOK_FAIL_ONCE"  # a marker directory: the first task to reach a fault site fails, once
FAIL_MODE_ENV = "GENTOK_FAIL_MODE"  # "raise" (default): raise InjectedFault; "exit": the worker process dies


class TransientError(RuntimeError):
    """An error worth retrying (the engines are told to retry these, and worker deaths, but not bugs)."""


class InjectedFault(TransientError):
    """The failure `maybe_fail` injects."""


def runner(engine: str):
    """The module running jobs on `engine` ("local", "ray" or "spark"): it has `map_tasks` and `map_groups`."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    return import_module(f"gentok.engines.{engine}_runner")


def content_key(*parts) -> str:
    """A short hex digest of JSON-able `parts`: the name of an output that depends on exactly these inputs."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def file_key(path: str | os.PathLike) -> list:
    """What identifies a file's content cheaply: resolved path, size and modification time (ns)."""
    st = os.stat(path)
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]



# -- one model per process -------------------------------------------------------------------------------------------
_WORKERS: dict = {}  # Spark reuses its Python workers between tasks: a worker built once serves them all


def cached_worker(key: str, factory):
    """The worker `factory()` built once per process under `key` (Spark has no actor to hold it; Ray does)."""
    if key not in _WORKERS:
        _WORKERS[key] = factory()
    return _WORKERS[key]


# -- fault injection -------------------------------------------------------------------------------------------------
def fault_plan() -> dict | None:
    """The fault to inject, read from the environment *on the driver* and shipped to the workers with the job:
    engine workers keep the environment they were started with, so they cannot read a variable set later."""
    marker = os.environ.get(FAIL_ONCE_ENV)
    if not marker:
        return None
    mode = os.environ.get(FAIL_MODE_ENV, "raise")
    if mode not in ("raise", "exit"):
        raise ValueError(f"{FAIL_MODE_ENV} must be 'raise' or 'exit', got {mode!r}")
    return {"marker": str(Path(marker).resolve()), "mode": mode}


def maybe_fail(plan: dict | None, site: str) -> None:
    """Fail the first task that reaches `site` under this `plan` (once per marker directory and site): raise
    `InjectedFault`, or end the worker process, as a crashed machine would. Jobs call it after writing their output,
    the worst moment for duplicates."""
    if not plan:
        return
    os.makedirs(plan["marker"], exist_ok=True)
    try:
        fd = os.open(os.path.join(plan["marker"], site), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # someone already failed here: this is the retry
    os.close(fd)
    if plan["mode"] == "exit":
        os._exit(17)
    raise InjectedFault(f"injected failure at {site} ({FAIL_ONCE_ENV})")


def spark_ddl(schema: list[tuple[str, str]]) -> str:
    """`[("users", "long"), ...]` -> "users long, ..." (a Spark DDL schema)."""
    return ", ".join(f"{name} {kind}" for name, kind in schema)


def empty_frame(schema: list[tuple[str, str]]):
    """An empty pandas DataFrame with the columns of `schema` (what a job with nothing to do returns)."""
    import pandas as pd

    return pd.DataFrame({name: pd.Series([], dtype="int64" if kind == "long" else object) for name, kind in schema})
