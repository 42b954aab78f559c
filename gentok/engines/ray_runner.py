"""Ray Data jobs: `map_tasks` and `map_groups` (see gentok.engines) on the Ray cluster this process is attached to,
or on a local one it starts.

- The worker class runs in an actor pool (`concurrency` actors, each with `gpus_per_worker` GPUs): its constructor,
  which loads the model, runs once per actor.
- Retries: Ray restarts a dead actor and resubmits its task (Ray Data's defaults for actor pools); an exception is
  retried only when it is a `TransientError`, so a bug fails the job instead of looping.
- `map_groups` uses Ray's `groupby(key).map_groups`: rows are shuffled by key on the cluster and each group reaches
  one worker call whole. Its actor pool starts at one actor and grows to `concurrency`: a fixed pool of one actor
  per CPU reserves every CPU before the shuffle's tasks can run, and the job waits forever. The shuffle is Ray's
  task-based sort shuffle, which needs no long-lived aggregator actors competing for the same CPUs.
- Quiet on success: Ray's notices about a run that went as planned are not shown: token authentication on by
  default, progress bars off, "execution finished", and the error-level line "Actor ... has constructor arguments in
  the object store and max_restarts > 0" that Ray's C++ core worker writes to the process's stderr for every Ray
  Data actor pool (Ray Data passes its actors their arguments by reference and lets them restart, by design; the line
  is filtered out of file descriptor 2 while a job runs, everything else passes through as it comes). Failures still
  surface as exceptions. `GENTOK_DEBUG=1` shows Ray's output as Ray prints it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading

import pandas as pd

from gentok.engines.common import TransientError, empty_frame


def session(num_cpus: int | None = None):
    """Attach to Ray: the cluster of `RAY_ADDRESS` / `ray job submit` when there is one, else start a local one with
    `num_cpus` CPUs (all by default). Reuses a session this process already has."""
    if not ray_debug():
        _quiet_ray_loggers()
    import ray

    if not ray.is_initialized():
        local = not os.environ.get("RAY_ADDRESS")
        extra = {"_node_ip_address": "127.0.0.1"} if local else {}  # a local cluster talks over loopback only
        ray.init(num_cpus=num_cpus if local else None, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, **extra)
    return ray


def ray_debug() -> bool:
    """Whether the user asked to see Ray's own logs (`GENTOK_DEBUG`, the one debug switch of gentok's commands)."""
    return os.environ.get("GENTOK_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


class _DropNotices(logging.Filter):
    """Drops the Ray log records that describe a run going as planned (module docstring)."""

    NOTICES = ("Token authentication is enabled for this Ray cluster", "Progress bars disabled")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOTICES)


def _quiet_ray_loggers() -> None:
    for name in ("ray._private.authentication.authentication_token_setup", "ray.data._internal.progress"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropNotices) for f in log.filters):
            log.addFilter(_DropNotices())
    # the per-dataset "execution finished in N seconds" INFO line
    logging.getLogger("ray.data._internal.execution.streaming_executor").setLevel(logging.WARNING)


# what Ray's core worker writes to stderr for every actor pool of a run that goes as planned (module docstring)
_ACTOR_NOTICE = b"has constructor arguments in the object store and max_restarts > 0"


@contextlib.contextmanager
def _without_actor_notice():
    """While the block runs, file descriptor 2 goes through a pipe whose reader thread forwards every write at once,
    minus the lines holding `_ACTOR_NOTICE` (written by C++, so no Python logger or filter can reach it)."""
    if ray_debug():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward():
        with os.fdopen(read_end, "rb", buffering=0) as src, contextlib.suppress(OSError):
            while chunk := src.read(65536):
                if _ACTOR_NOTICE in chunk:  # a C++ log line is one write, well under the pipe's atomic size
                    chunk = b"".join(l for l in chunk.splitlines(keepends=True) if _ACTOR_NOTICE not in l)
                os.write(saved, chunk)

    thread = threading.Thread(target=forward, name="gentok-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the reader drains it and stops
        thread.join(timeout=5)
        os.close(saved)


def _prepare(concurrency):
    import ray
    from ray.data import DataContext

    session()
    ctx = DataContext.get_current()
    ctx.actor_task_retry_on_errors = [TransientError]
    ctx.shuffle_strategy = "sort_shuffle_pull_based"
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)))


def _collect(ds, schema) -> pd.DataFrame:
    with _without_actor_notice():  # the job runs (and creates its actors) here
        out = ds.to_pandas()
    return out[[name for name, _ in schema]] if len(out) else empty_frame(schema)


def map_tasks(tasks: pd.DataFrame, worker: type, kwargs: dict, schema, concurrency: int | None = None,
              gpus_per_worker: float = 0) -> pd.DataFrame:
    """`worker(**kwargs)` applied to each row of `tasks` (one Ray task per row, so a retry redoes one row)."""
    import ray.data
    from ray.data import ActorPoolStrategy

    if not len(tasks):
        return empty_frame(schema)
    n = _prepare(concurrency)
    ds = ray.data.from_pandas([tasks.iloc[[i]].reset_index(drop=True) for i in range(len(tasks))])
    ds = ds.map_batches(worker, fn_constructor_kwargs=kwargs, batch_size=None, batch_format="pandas",
                        compute=ActorPoolStrategy(size=min(n, len(tasks))), num_gpus=gpus_per_worker or None)
    return _collect(ds, schema)


def map_groups(paths: list[str], key: str, worker: type, kwargs: dict, schema, exclude=(), concurrency=None,
               gpus_per_worker: float = 0, num_groups: int | None = None) -> pd.DataFrame:
    """`worker(**kwargs)` applied to each group of rows sharing `key` in the Parquet files `paths`, skipping keys in
    `exclude`; the shuffle runs on the cluster and only the worker's returned rows come back."""
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy

    if not paths:
        return empty_frame(schema)
    n = _prepare(concurrency)
    # an actor holding the only CPU would starve the read and shuffle tasks it waits for: on a one-CPU cluster the
    # actor reserves no CPU (it still uses one while it scores)
    cpus = {"num_cpus": 0} if ray.cluster_resources().get("CPU", 1) < 2 else {}
    ds = ray.data.read_parquet(paths)
    if exclude:
        skip = set(exclude)
        ds = ds.filter(lambda row: row[key] not in skip)
    pool = ActorPoolStrategy(min_size=1, max_size=n)
    ds = ds.groupby(key, num_partitions=num_groups).map_groups(
        worker, fn_constructor_kwargs=kwargs, batch_format="pandas", compute=pool, num_gpus=gpus_per_worker or None,
        **cpus)
    return _collect(ds, schema)
