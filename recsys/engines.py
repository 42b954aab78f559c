"""Batch scoring on Ray Data or Spark: `recsys score --engine ray|spark`, the same rows as the local `score_file`.

    score_on_engine("model_dir", "histories.csv", "recs/", engine="ray")   # -> recs/part-00000.parquet, ...

1. **Stage** (driver, streaming, bounded memory): the input is read by the local path's readers (`recsys.histories`:
   the same malformed-row report, the same id types) and written as Parquet chunks of canonical rows, each row tagged
   with its user's partition `bucket` (the local path's hash, `crc32(user) % partitions`).
2. **Score** (engine): the engine shuffles the staged rows by bucket, so each group holds whole user histories; a
   worker (model loaded once per Ray actor / Spark Python worker) scores a group with `recsys.scoring.score_partition`
   and writes `part-<bucket>.parquet` atomically. Only per-bucket counts come back to the driver.
3. **Summarize** (driver): the counts are summed into the same summary as the local path (`_summary.json`).

Output: a Parquet directory whose files hold `user_id, rank, item_id, score, error` with the local path's column
types (`pandas.read_parquet(out_dir)` reads it whole). With the same `partitions`, each part file equals the local
path's partition output; with any `partitions`, the set of rows is the same for ordinary input (timestamps that only
an int64 can order exactly are the exception: their type is inferred per partition, as in the local path).

Faults: a bucket's file always holds the same rows and is replaced atomically, so an engine retry (after an exception
or a dead worker) neither loses nor duplicates rows; a rerun after a driver crash reuses the staged input and skips
buckets already written. A finished run leaves `_summary.json`; rerunning it returns that summary.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa

from gentok.engines.common import fault_plan, maybe_fail, runner
from gentok.files import atomic_write_json, write_parquet_atomic
from recsys import ids as idk
from recsys.histories import check_input, file_user_kind, iter_input, missing
from recsys.scoring import (MAX_REPORTED, BatchScorer, empty_output, output_table, partition_of, score_partition,
                            user_id_dtype)

STATS = [("bucket", "long"), ("users", "long"), ("unknown_items", "long"), ("users_with_unknown", "long"),
         ("errors", "long"), ("rows", "long")]  # what each group returns to the driver
STAGED = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("timestamp", pa.string()),
                    ("line", pa.int64()), ("bucket", pa.int64())])
PLAN, SUMMARY, STAGING, PART_STATS = "_plan.json", "_summary.json", "_staging", "_stats"


class ScoreWorker:
    """Scores groups of staged rows (one bucket each) into `part-<bucket>.parquet`; the model loads in `__init__`."""

    def __init__(self, model: str, out_dir: str, k: int, exclude_seen: bool, batch_users: int, user_kind: str,
                 faults: dict | None = None):
        self.scorer = BatchScorer(model, k=k, exclude_seen=exclude_seen, batch_users=batch_users)
        self.out, self.user_dtype, self.faults = Path(out_dir), user_id_dtype(user_kind), faults

    def __call__(self, group: pd.DataFrame) -> pd.DataFrame:
        bucket = int(group["bucket"].iloc[0])
        before = dict(self.scorer.stats)
        res = score_partition(self.scorer, group[["user_id", "item_id", "timestamp", "line"]], self.user_dtype)
        write_parquet_atomic(output_table(res, self.scorer.id_kind, self.user_dtype), self.out / _part(bucket))
        stats = {k: self.scorer.stats[k] - before[k] for k in self.scorer.stats}
        stats.update(bucket=bucket, rows=len(res))
        atomic_write_json(self.out / PART_STATS / f"{bucket:05d}.json", stats)
        maybe_fail(self.faults, "score")
        return pd.DataFrame([stats])[[name for name, _ in STATS]].astype("int64")


def _part(bucket: int) -> str:
    return f"part-{bucket:05d}.parquet"


def _timestamp_text(values) -> list:
    """Timestamps as the text the local path's CSV spill holds (None when absent): the scorer parses both alike."""
    return [None if missing(v) else str(v) for v in values]


def stage_input(input_path: Path, staging: Path, partitions: int, chunk_rows: int) -> dict:
    """Stream `input_path` into Parquet chunks under `staging` (module docstring, step 1); returns what the summary
    needs from the read (rows, malformed rows, the user id kind). Redone as a whole unless it finished."""
    done = staging / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    malformed, n_bad, n_rows, kinds, chunks = [], 0, 0, [], 0
    for piece in iter_input(input_path, chunk_rows):
        n_bad += len(piece.malformed)
        malformed.extend(piece.malformed[: MAX_REPORTED - len(malformed)])
        kinds.append(piece.user_kind)
        rows = piece.rows
        n_rows += len(rows)
        if not len(rows):
            continue
        table = pa.table({"user_id": pa.array(rows["user_id"].tolist(), pa.string()),
                          "item_id": pa.array([None if missing(v) else v for v in rows["item_id"]], pa.string()),
                          "timestamp": pa.array(_timestamp_text(rows["timestamp"]), pa.string()),
                          "line": pa.array(rows["line"].astype("int64")),
                          "bucket": pa.array(partition_of(rows["user_id"], partitions))}, schema=STAGED)
        write_parquet_atomic(table, staging / f"chunk-{chunks:05d}.parquet")
        chunks += 1
    facts = {"rows": n_rows, "malformed": n_bad, "malformed_rows": malformed, "user_kind": file_user_kind(kinds),
             "chunks": chunks}
    atomic_write_json(done, facts)
    return facts


def _prepare_out(out: Path, plan: dict) -> dict | None:
    """Make `out` ready for `plan`; returns the summary when a finished run of the same plan is already there."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a directory for engine output, {out} is a file")
    old = json.loads((out / PLAN).read_text()) if (out / PLAN).is_file() else None
    if old == plan and (out / SUMMARY).is_file():
        return json.loads((out / SUMMARY).read_text())
    if old != plan and out.is_dir() and any(out.iterdir()):
        if old is None:
            raise ValueError(f"{out} is not empty and was not written by `recsys score --engine`; choose a new --out")
        shutil.rmtree(out)  # an earlier job with other inputs or settings: start over
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / PLAN, plan)
    return None


def score_on_engine(model_dir, input_path, out_dir, engine: str = "ray", k: int = 10, exclude_seen: bool = True,
                    partitions: int | None = None, chunk_rows: int = 100_000, batch_users: int = 256,
                    concurrency: int | None = None, gpus_per_worker: float = 0, progress: bool = True) -> dict:
    """Score every user of `input_path` on `engine` ("ray", "spark", or "local" for the same job in this process)
    into the Parquet directory `out_dir`; returns the summary dict of `recsys.scoring.score_file`.

    `partitions` (buckets of users, default one per ~32 MB of input and at least 8) bounds the rows one worker call
    holds; `concurrency`: Ray actors (default one per CPU); `gpus_per_worker`: GPUs per Ray actor."""
    from recsys.scoring import format_summary

    start = time.time()
    input_path, out = Path(input_path), Path(out_dir)
    check_input(input_path)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    run = runner(engine)
    P = partitions or max(8, math.ceil(input_path.stat().st_size / (32 << 20)))
    plan = {"input": str(input_path.resolve()), "size": input_path.stat().st_size,
            "mtime": input_path.stat().st_mtime_ns, "partitions": P, "k": k, "exclude_seen": exclude_seen,
            "model": str(Path(model_dir).resolve())}
    finished = _prepare_out(out, plan)
    if finished is not None:
        return finished
    facts = stage_input(input_path, out / STAGING, P, chunk_rows)
    (out / PART_STATS).mkdir(exist_ok=True)
    done = [int(f.stem) for f in (out / PART_STATS).glob("*.json") if (out / _part(int(f.stem))).is_file()]
    kwargs = {"model": plan["model"], "out_dir": str(out.resolve()), "k": k, "exclude_seen": exclude_seen,
              "batch_users": batch_users, "user_kind": facts["user_kind"], "faults": fault_plan()}
    staged = sorted(str(p.resolve()) for p in (out / STAGING).glob("chunk-*.parquet"))
    run.map_groups(staged, "bucket", ScoreWorker, kwargs, STATS, exclude=done, concurrency=concurrency,
                   gpus_per_worker=gpus_per_worker, num_groups=min(P, 64))
    scorer_kind = BatchScorer(model_dir).id_kind if not facts["rows"] else None
    summary = _summarize(out, facts, scorer_kind)
    summary.update(k=k, seconds=round(time.time() - start, 3), engine=engine, partitions=P,
                   user_id_type=facts["user_kind"])
    summary["users_per_second"] = round(summary["users"] / max(summary["seconds"], 1e-9), 1)
    atomic_write_json(out / SUMMARY, summary)
    shutil.rmtree(out / STAGING, ignore_errors=True)
    shutil.rmtree(out / PART_STATS, ignore_errors=True)
    if progress:
        print(format_summary({**summary, "processes": engine}, out).replace(" process(es)", ""))
    return summary


def _summarize(out: Path, facts: dict, empty_item_kind: str | None) -> dict:
    """Totals over the part files' counts; a run with no rows at all writes one empty part (so the directory reads
    back as an empty table with the output columns)."""
    totals = {"users": 0, "unknown_items": 0, "users_with_unknown": 0, "errors": 0, "rows": 0}
    stats = [json.loads(f.read_text()) for f in sorted((out / PART_STATS).glob("*.json"))]
    for s in stats:
        if not (out / _part(s["bucket"])).is_file():
            raise RuntimeError(f"bucket {s['bucket']}: counts written but {_part(s['bucket'])} is missing")
        for key in totals:
            totals[key] += s[key]
    if not stats:
        user_dtype = user_id_dtype(facts["user_kind"])
        write_parquet_atomic(output_table(empty_output(empty_item_kind, user_dtype), empty_item_kind, user_dtype),
                             out / _part(0))
    totals["item_id_type"] = empty_item_kind or _item_kind(out)
    totals.update(malformed_rows=facts["malformed"],
                  malformed=[{"line": l, "reason": why} for l, why in facts["malformed_rows"]])
    return totals


def _item_kind(out: Path) -> str:
    """The item id kind of written output, from the Arrow type of its `item_id` column."""
    import pyarrow.parquet as pq

    first = next(iter(sorted(out.glob("part-*.parquet"))))
    return idk.INT if pa.types.is_integer(pq.read_schema(first).field("item_id").type) else idk.STR


def read_scores(out_dir) -> pd.DataFrame:
    """The rows of an engine output directory, ordered by user and rank (part files hold users in no fixed order)."""
    df = pd.read_parquet(out_dir)
    return df.sort_values(["user_id", "rank"], kind="stable", na_position="last").reset_index(drop=True)
