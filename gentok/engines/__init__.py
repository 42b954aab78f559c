"""Batch jobs on a real engine, Ray Data or Spark (or in-process, `"local"`): tokenization here, and the jobs of
packages built on gentok (e.g. offline scoring).

Two job shapes cover every batch job we have, so each engine needs only two functions (`ray_runner.py`,
`spark_runner.py`, the same signatures):
- `map_tasks`: a small table of tasks (one row each, e.g. a batch of asset files to tokenize), mapped by a worker;
- `map_groups`: a large Parquet dataset shuffled by a key column on the engine, each group mapped by a worker
  (e.g. every user's whole history for scoring).

A *worker* is a class: its constructor loads the model (once per Ray actor / Spark Python worker), its
`__call__(pandas.DataFrame) -> pandas.DataFrame` writes the job's output files itself and returns small stats rows,
which are all the driver collects. Output files are named by what they hold and written atomically (`common.py`), so
an engine retry after a crash rewrites the same file with the same bytes: nothing lost, nothing duplicated, and a
rerun skips what is written.

    from gentok.engines import encode_to_parquet, read_encoded
    encode_to_parquet("model_dir", ["images/"], "tokens/", engine="ray")
"""

from gentok.engines.batch_encode import encode_to_parquet, expand_inputs, read_encoded
from gentok.engines.common import ENGINES, InjectedFault, TransientError, runner

__all__ = ["ENGINES", "InjectedFault", "TransientError", "encode_to_parquet", "expand_inputs", "read_encoded",
           "runner"]
