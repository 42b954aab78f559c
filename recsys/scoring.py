"""Offline batch scoring: a file of user histories in, top-K recommendations out, in original ids.

Input: CSV, Parquet or JSONL in long form (`user_id, item_id[, timestamp]`, one interaction per row, like the
training data; read by `recsys.histories`). Output: Parquet or CSV with `user_id, rank, item_id, score, error`.

Ids keep their type, so the output joins back to the input: user ids come back in the input's type (for files by the
rules of `recsys.ids`: an integer Parquet/JSON column or canonical integers in a CSV give int64, anything else
strings; a DataFrame's `user_id` dtype is kept as is), item ids in the type of the model's catalog ids.

How it scales and survives:
- **Streaming, bounded memory**: pass 1 streams the input in chunks and spills rows into `P` hash partitions by user
  (a user's rows may be anywhere in the file); pass 2 scores one partition at a time.
- **Resumable**: each finished partition is written atomically (`out-XXXXX.parquet` + stats); a rerun skips finished
  partitions, so after a kill the merged output still has every user exactly once. The merge is atomic too.
- **Sharded**: under `accelerate launch`, rank r spills and scores partitions p with p % world == r; rank 0 merges in
  partition order, so the output does not depend on the number of processes.
- **The per-batch function** (`BatchScorer.__call__`) takes and returns a pandas DataFrame of whole user histories;
  `recsys.engines` runs it on Ray Data or Spark (`recsys score --engine ray|spark`) through `score_partition`.
- **Bad input**: malformed rows are skipped and reported with their line number; unknown items are dropped from a
  history and counted; a user with no usable items gets one row with an `error` message instead of a crash.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from gentok.files import atomic_write_json, write_parquet_atomic
from recsys import ids as idk
from recsys.histories import file_user_kind, iter_input, missing

OUT_COLUMNS = ["user_id", "rank", "item_id", "score", "error"]
MAX_REPORTED = 50  # malformed rows listed one by one in the summary (all are counted)


class BatchScorer:
    """`scorer(df) -> df`: long-form histories of complete users in, top-k rows out (see the module docstring).

    Args:
        model: a `Recommender` (or a model directory path, loaded with `recsys.pipeline.load_recommender`).
        item_ids: internal index -> original item id (given with `model`).
        k: recommendations per user. exclude_seen: never recommend an item of the history.
        batch_users: users per model call.
        catalog: with a model directory, an items file (ids + text, `recsys.data.load_items`): the histories and
            recommendations speak that catalog's ids, its items unknown to the model added from their text
            (`recsys.catalog.with_catalog`; text-based models only). text_encoder: overrides the recorded one.
    """

    def __init__(self, model, item_ids=None, id_kind: str = "str", k: int = 10, exclude_seen: bool = True,
                 batch_users: int = 256, catalog=None, text_encoder: str | None = None):
        if isinstance(model, (str, os.PathLike)):
            from recsys.pipeline import open_recommender

            model, cat = open_recommender(model, catalog, text_encoder)
            item_ids, id_kind = cat.ids, cat.id_kind
        elif catalog is not None:
            raise ValueError("catalog needs a model directory (its items.json says which items the model knows)")
        if item_ids is None:
            raise ValueError("pass item_ids (internal index -> original id) with the model")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.model, self.k, self.exclude_seen, self.batch_users = model.eval(), k, exclude_seen, batch_users
        self.item_ids = np.asarray([idk.id_string(i) for i in item_ids], dtype=object)
        self.id_kind = id_kind
        self.lookup = {s: i for i, s in enumerate(self.item_ids)}
        self.stats = {"users": 0, "unknown_items": 0, "users_with_unknown": 0, "errors": 0}

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        if "user_id" not in df.columns or "item_id" not in df.columns:
            raise ValueError(f"expected columns user_id, item_id[, timestamp]; got {list(df.columns)}")
        df = df.reset_index(drop=True)
        absent = df["user_id"].isna().to_numpy()
        if absent.any():
            raise ValueError(f"user_id is missing in {int(absent.sum())} row(s), first at row {int(absent.argmax())}")
        order_cols = ["_first", "_ts", "_row"]
        work = pd.DataFrame({"user_id": df["user_id"], "item_id": df["item_id"], "_row": np.arange(len(df))})
        work["_ts"] = pd.to_numeric(df["timestamp"], errors="coerce") if "timestamp" in df.columns else 0.0
        work["_first"] = work.groupby("user_id", sort=False)["_row"].transform("min")
        work = work.sort_values(order_cols, kind="stable")
        users, hists, errors = [], [], []
        for user, g in work.groupby("_first", sort=True)["item_id"]:
            uid = work.loc[g.index[0], "user_id"]
            raw = [idk.id_string(v) for v in g if not missing(v)]
            known = [self.lookup[s] for s in raw if s in self.lookup]
            unknown = len(raw) - len(known)
            self.stats["unknown_items"] += unknown
            self.stats["users_with_unknown"] += unknown > 0
            users.append(uid)
            if not known:
                hists.append(None)
                errors.append("empty history" if not raw else f"no known items ({unknown} unknown to the model)")
            else:
                hists.append(known)
                errors.append(None)
        self.stats["users"] += len(users)
        out = []
        ok = [i for i, h in enumerate(hists) if h is not None]
        for s in range(0, len(ok), self.batch_users):
            idx = ok[s: s + self.batch_users]
            items, scores = self.model.recommend([hists[i] for i in idx], k=self.k, exclude_seen=self.exclude_seen)
            items, scores = items.numpy(), scores.float().numpy()
            for j, i in enumerate(idx):
                keep = items[j] >= 0
                n = int(keep.sum())
                out.append(pd.DataFrame({"user_id": users[i], "rank": np.arange(1, n + 1),
                                         "item_id": self.item_ids[items[j][keep]], "score": scores[j][keep],
                                         "error": None, "_u": i}))
        bad = [i for i, e in enumerate(errors) if e is not None]
        self.stats["errors"] += len(bad)
        if bad:
            out.append(pd.DataFrame({"user_id": [users[i] for i in bad], "rank": None, "item_id": None,
                                     "score": None, "error": [errors[i] for i in bad], "_u": bad}))
        user_dtype = df["user_id"].dtype  # the caller's type, whatever it is
        if not out:
            return _empty_output(self.id_kind, user_dtype)
        res = pd.concat(out, ignore_index=True).sort_values(["_u", "rank"], kind="stable").drop(columns="_u")
        return _typed(res.reset_index(drop=True), self.id_kind, user_dtype)


def _user_dtype(kind: str):
    """The user id dtype of file output: int64, or pandas' string type (a Parquet string column)."""
    return np.dtype("int64") if kind == idk.INT else str


def _typed(df: pd.DataFrame, item_kind: str, user_dtype) -> pd.DataFrame:
    """The output columns in their types: user ids as `user_dtype`, item ids by the catalog's kind."""
    df["user_id"] = df["user_id"].astype(user_dtype)
    df["rank"] = df["rank"].astype("Int64")
    df["item_id"] = df["item_id"].astype(idk.id_dtype(item_kind))
    df["score"] = df["score"].astype("float64")
    df["error"] = df["error"].astype("string")
    return df[OUT_COLUMNS]


def _empty_output(item_kind: str, user_dtype) -> pd.DataFrame:
    return _typed(pd.DataFrame({c: pd.Series([], dtype=object) for c in OUT_COLUMNS}), item_kind, user_dtype)


def output_table(df: pd.DataFrame, item_kind: str, user_dtype) -> pa.Table:
    """Scored rows as the Arrow table every output file holds: the column types of `_typed`, and pandas metadata so
    that reading the file back gives the same dtypes (nullable `rank`, string or Int64 `item_id`)."""
    schema = pa.Schema.from_pandas(_empty_output(item_kind, user_dtype), preserve_index=False)
    return pa.Table.from_pandas(_typed(df, item_kind, user_dtype), schema=schema, preserve_index=False)


def _partition(users: pd.Series, n: int) -> np.ndarray:
    return np.fromiter((zlib.crc32(u.encode()) % n for u in users), dtype=np.int64, count=len(users))


def score_partition(scorer: BatchScorer, df: pd.DataFrame, user_dtype) -> pd.DataFrame:
    """The output rows of one partition of spilled input: rows of complete users (`user_id`, `item_id` as canonical
    strings, `timestamp`, `line`) in any order -> `scorer`'s rows, user ids as `user_dtype`. The local driver and the
    Ray/Spark jobs (`recsys.engines`) all score through this, so their rows agree."""
    if not len(df):
        return _empty_output(scorer.id_kind, user_dtype)
    df = df.copy()
    df["user_id"] = df["user_id"].astype(user_dtype)  # canonical strings back to the input's type
    return scorer(df.sort_values("line", kind="stable"))


# -- the file driver: spill -> score partitions -> merge ------------------------------------------------------------
def _state():
    import torch
    from accelerate import PartialState

    # without cpu=True accelerate ignores a CPU-only `--multi_gpu` launch and every process thinks it is alone
    return PartialState(cpu=not torch.cuda.is_available())



def score_file(model_dir, input_path, out_path, k: int = 10, exclude_seen: bool = True,
               partitions: int | None = None, chunk_rows: int = 100_000, batch_users: int = 256,
               work_dir=None, progress: bool = True, catalog=None, text_encoder: str | None = None,
               _crash_after: int | None = None) -> dict:
    """Score every user of `input_path` and write `out_path` (.parquet or .csv); returns the summary dict.
    `catalog` / `text_encoder`: recommend on another catalog (see `BatchScorer`).

    `partitions` defaults to one per ~32 MB of input. `work_dir` (default `<out>.work`) holds the spill and finished
    partitions; it is removed after a successful merge. `_crash_after` stops after that many partitions (tests)."""
    start = time.time()
    state = _state()
    rank, world = state.process_index, state.num_processes
    out_path, input_path = Path(out_path), Path(input_path)
    if out_path.suffix.lower() not in (".parquet", ".csv"):
        raise ValueError(f"output must end in .parquet or .csv, got {out_path.name}")
    if not input_path.is_file():
        raise ValueError(f"input {input_path} does not exist")
    P = partitions or max(1, math.ceil(input_path.stat().st_size / (32 << 20)))
    work = Path(work_dir) if work_dir else out_path.with_name(out_path.name + ".work")
    plan = {"input": str(input_path.resolve()), "size": input_path.stat().st_size,
            "mtime": int(input_path.stat().st_mtime), "partitions": P, "world": world, "k": k,
            "exclude_seen": exclude_seen, "model": str(Path(model_dir).resolve()),
            "catalog": None if catalog is None else str(Path(catalog).resolve()), "text_encoder": text_encoder}
    if rank == 0:
        old = json.loads((work / "plan.json").read_text()) if (work / "plan.json").is_file() else None
        if old != plan and work.exists():
            shutil.rmtree(work)  # a different job (or world size) left this: start over
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_json(work / "plan.json", plan)
    state.wait_for_everyone()
    mine = [p for p in range(P) if p % world == rank]

    # pass 1: spill my partitions (redone as a whole unless it finished)
    done_marker = work / f"spilled-r{rank}.json"
    if not done_marker.is_file():
        for p in mine:
            (work / f"in-{p:05d}.csv").unlink(missing_ok=True)
        malformed, n_bad, n_rows, kinds = [], 0, 0, []
        for piece in tqdm(iter_input(input_path, chunk_rows), disable=not (progress and rank == 0),
                          desc="read input", unit="chunk"):
            chunk, bad = piece.rows, piece.malformed
            n_bad += len(bad)
            malformed.extend(bad[: MAX_REPORTED - len(malformed)])
            n_rows += len(chunk)
            kinds.append(piece.user_kind)
            if len(chunk) == 0:
                continue
            part = _partition(chunk["user_id"], P)
            for p in mine:
                sel = chunk[part == p]
                if len(sel):
                    f = work / f"in-{p:05d}.csv"
                    sel.to_csv(f, mode="a", header=not f.exists(), index=False)
        # every rank reads the whole file, so every rank knows the type of all its user ids before scoring
        atomic_write_json(done_marker, {"rows": n_rows, "malformed": n_bad, "malformed_rows": malformed,
                                        "user_kind": file_user_kind(kinds)})
    user_kind = json.loads(done_marker.read_text()).get("user_kind", idk.STR)
    user_dtype = _user_dtype(user_kind)

    # pass 2: score each unfinished partition, atomically
    scorer = BatchScorer(model_dir, k=k, exclude_seen=exclude_seen, batch_users=batch_users, catalog=catalog,
                         text_encoder=text_encoder)
    finished = 0
    for p in tqdm(mine, disable=not (progress and rank == 0), desc="score partitions"):
        part_out = work / f"out-{p:05d}.parquet"
        if part_out.is_file() and (work / f"out-{p:05d}.json").is_file():
            continue
        f = work / f"in-{p:05d}.csv"
        df = pd.read_csv(f, dtype={"user_id": str, "item_id": str}, keep_default_na=False, na_values=[""]) \
            if f.is_file() else pd.DataFrame(columns=["user_id", "item_id", "timestamp", "line"])
        before = dict(scorer.stats)
        res = score_partition(scorer, df, user_dtype)
        write_parquet_atomic(res, part_out)
        atomic_write_json(work / f"out-{p:05d}.json", {k2: scorer.stats[k2] - before[k2] for k2 in scorer.stats})
        finished += 1
        if _crash_after is not None and finished >= _crash_after:
            raise RuntimeError(f"simulated crash after {finished} partitions")
    state.wait_for_everyone()

    summary = {}
    if rank == 0:
        summary = _merge(work, out_path, P, world, scorer.id_kind, user_dtype)
        summary.update(k=k, seconds=round(time.time() - start, 3), processes=world, partitions=P,
                       user_id_type=user_kind, item_id_type=scorer.id_kind)
        summary["users_per_second"] = round(summary["users"] / max(summary["seconds"], 1e-9), 1)
        atomic_write_json(out_path.with_name(out_path.name + ".summary.json"), summary)
        shutil.rmtree(work, ignore_errors=True)
        if progress:
            print(format_summary(summary, out_path))
    state.wait_for_everyone()
    return summary


def _merge(work: Path, out_path: Path, P: int, world: int, id_kind: str, user_dtype) -> dict:
    totals = {"users": 0, "unknown_items": 0, "users_with_unknown": 0, "errors": 0, "rows": 0}
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    empty = _empty_output(id_kind, user_dtype)
    schema = pa.Schema.from_pandas(empty, preserve_index=False)
    try:
        if out_path.suffix.lower() == ".csv":
            empty.to_csv(tmp, index=False)
        for p in range(P):
            df = pd.read_parquet(work / f"out-{p:05d}.parquet")
            stats = json.loads((work / f"out-{p:05d}.json").read_text())
            for key in stats:
                totals[key] += stats[key]
            totals["rows"] += len(df)
            if out_path.suffix.lower() == ".csv":
                df.to_csv(tmp, mode="a", header=False, index=False)
            else:
                writer = writer or pq.ParquetWriter(tmp, schema)
                writer.write_table(pa.Table.from_pandas(_typed(df, id_kind, user_dtype), schema=schema,
                                                        preserve_index=False))
        if writer is None and out_path.suffix.lower() == ".parquet":
            empty.to_parquet(tmp, index=False)
        if writer is not None:
            writer.close()
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    malformed, reported = 0, []
    for r in range(world):
        m = json.loads((work / f"spilled-r{r}.json").read_text())
        if r == 0:  # every rank reads the whole file; rank 0's count is the file's
            malformed, reported = m["malformed"], m["malformed_rows"]
    totals.update(malformed_rows=malformed, malformed=[{"line": l, "reason": why} for l, why in reported])
    return totals


def format_summary(s: dict, out_path) -> str:
    lines = [f"scored {s['users']} users -> {out_path} ({s['rows']} rows, {s['seconds']:.1f}s, "
             f"{s['users_per_second']:.0f} users/s, {s['processes']} process(es), {s['partitions']} partition(s))",
             f"  unknown items dropped: {s['unknown_items']} (in {s['users_with_unknown']} users)",
             f"  users with an error entry (no usable history): {s['errors']}",
             f"  malformed rows skipped: {s['malformed_rows']}"]
    for m in s["malformed"][:10]:
        lines.append(f"    line {m['line']}: {m['reason']}")
    if s["malformed_rows"] > 10:
        lines.append(f"    ... ({s['malformed_rows'] - 10} more; see the .summary.json)")
    return "\n".join(lines)
