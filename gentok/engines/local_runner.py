"""The in-process "engine": the same jobs as `ray_runner` / `spark_runner`, run one task after another in this
process. A baseline for the benchmark and a reference for tests; it holds a whole `map_groups` input in memory."""

from __future__ import annotations

import pandas as pd

from gentok.engines.common import empty_frame



def map_tasks(tasks: pd.DataFrame, worker: type, kwargs: dict, schema, concurrency: int | None = None,
              gpus_per_worker: float = 0) -> pd.DataFrame:
    """`worker(**kwargs)` applied to each row of `tasks`; returns the rows it returned (see gentok.engines)."""
    if not len(tasks):
        return empty_frame(schema)
    w = worker(**kwargs)
    return pd.concat([w(tasks.iloc[[i]].reset_index(drop=True)) for i in range(len(tasks))], ignore_index=True)


def map_groups(paths: list[str], key: str, worker: type, kwargs: dict, schema, exclude=(), concurrency=None,
               gpus_per_worker: float = 0, num_groups: int | None = None) -> pd.DataFrame:
    """`worker(**kwargs)` applied to each group of rows sharing `key` in the Parquet files `paths` (groups whose key is
    in `exclude` are skipped)."""
    if not paths:
        return empty_frame(schema)
    df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    df = df[~df[key].isin(list(exclude))]
    if not len(df):
        return empty_frame(schema)
    w = worker(**kwargs)
    return pd.concat([w(g.reset_index(drop=True)) for _, g in df.groupby(key, sort=True)], ignore_index=True)
