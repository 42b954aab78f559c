"""Spark jobs: `map_tasks` (`mapInPandas`) and `map_groups` (`groupBy(key).applyInPandas`), see gentok.engines.

- Spark has no actors: the worker object (and so the model) is built once per Python worker process and cached
  there (`common.cached_worker`); Spark reuses Python workers between tasks (`spark.python.worker.reuse`, on by
  default), so a model loads once per worker, not once per task.
- Retries are Spark's: a failed task (an exception or a dead Python worker) is rerun up to `spark.task.maxFailures`
  times. That is 4 on a cluster but 1 in plain `local[n]` mode, so local sessions here use `local[n,4]`.
- Parallelism and GPUs are the session's business (`--master`, `--executor-cores`,
  `spark.task.resource.gpu.amount`), not the job's: `concurrency` and `gpus_per_worker` are accepted and ignored.
"""

from __future__ import annotations

import os
import sys

import pandas as pd

from gentok.engines.common import cached_worker, content_key, empty_frame, spark_ddl


def session(master: str | None = None, shuffle_partitions: int = 8):
    """The active Spark session, or a new one: on `master` (default: the one `spark-submit` set, else
    `local[<cpus>,4]`). Local sessions bind to 127.0.0.1 and run Python workers with this interpreter."""
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName("gentok")
    if master or not SparkConf().contains("spark.master"):
        builder = builder.master(master or f"local[{os.cpu_count() or 1},4]")
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # a local session talks over loopback only
        builder = (builder.config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
                   .config("spark.ui.enabled", "false")
                   .config("spark.pyspark.python", sys.executable)
                   .config("spark.pyspark.driver.python", sys.executable))
    spark = (builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
             .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark



def _runner(worker: type, kwargs: dict):
    """The per-batch function Spark ships to its workers: the cached worker applied to each pandas batch."""
    key = content_key(worker.__module__, worker.__qualname__, kwargs)

    def get():
        return cached_worker(key, lambda: worker(**kwargs))

    return get


def map_tasks(tasks: pd.DataFrame, worker: type, kwargs: dict, schema, concurrency: int | None = None,
              gpus_per_worker: float = 0) -> pd.DataFrame:
    """`worker(**kwargs)` applied to each row of `tasks` (one Spark partition per row)."""
    if not len(tasks):
        return empty_frame(schema)
    spark = session()
    get = _runner(worker, kwargs)

    def run(batches):
        w = get()
        for pdf in batches:
            for i in range(len(pdf)):
                yield w(pdf.iloc[[i]].reset_index(drop=True))

    sdf = spark.createDataFrame(tasks).repartition(len(tasks))
    out = sdf.mapInPandas(run, spark_ddl(schema)).toPandas()
    return out if len(out) else empty_frame(schema)


def map_groups(paths: list[str], key: str, worker: type, kwargs: dict, schema, exclude=(), concurrency=None,
               gpus_per_worker: float = 0, num_groups: int | None = None) -> pd.DataFrame:
    """`worker(**kwargs)` applied to each group of rows sharing `key` in the Parquet files `paths`, skipping keys in
    `exclude`; the shuffle runs on the executors and only the worker's returned rows come back."""
    from pyspark.sql import functions as F

    if not paths:
        return empty_frame(schema)
    spark = session()
    get = _runner(worker, kwargs)
    if num_groups:
        spark.conf.set("spark.sql.shuffle.partitions", str(num_groups))
    sdf = spark.read.parquet(*paths)
    if exclude:
        sdf = sdf.filter(~F.col(key).isin(list(exclude)))
    out = sdf.groupBy(key).applyInPandas(lambda pdf: get()(pdf), spark_ddl(schema)).toPandas()
    return out if len(out) else empty_frame(schema)
