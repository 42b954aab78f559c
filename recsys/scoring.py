"""Offline batch scoring: a file of user histories in, top-K recommendations out, in original ids.

Input: CSV, Parquet or JSONL in long form (`user_id, item_id[, timestamp]`, one interaction per row, columns named
as the training data may name them: `userId`, `movie_id`, ...; read by `recsys.histories`). Output: Parquet or CSV
with `user_id, rank, item_id, score, error`.

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
- **Bad input**: malformed rows are skipped and reported with their line number; items unknown to the model (and, with
  a catalog, items it leaves out) are dropped from a history and counted; a user with no usable items gets one row
  with an `error` message saying why, instead of a crash.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
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

from gentok.files import atomic_write_bytes, atomic_write_json, write_parquet_atomic
from recsys import ids as idk
from recsys.histories import check_input, columns, file_user_kind, iter_input

OUT_COLUMNS = ["user_id", "rank", "item_id", "score", "error"]
MAX_REPORTED = 50  # malformed rows listed one by one in the summary (all are counted)


class BatchScorer:
    """`scorer(df) -> df`: long-form histories of complete users in, top-k rows out (see the module docstring).

    Args:
        model: a `Recommender` (or a model directory path, loaded with `recsys.saving.load_model_dir`).
        item_ids: internal index -> original item id (given with `model`).
        k: recommendations per user. exclude_seen: never recommend an item of the history.
        batch_users: users per model call.
        catalog: with a model directory, an items file (ids + text, `recsys.data.load_items`): the histories and
            recommendations speak that catalog's ids, its items unknown to the model added from their text
            (`recsys.catalog.with_catalog`; text-based models only). History items the model knows but the catalog
            leaves out are dropped from the histories and counted apart (`outside_catalog_items`), not as unknown.
            text_encoder: overrides the recorded one.
    """

    def __init__(self, model, item_ids=None, id_kind: str = "str", k: int = 10, exclude_seen: bool = True,
                 batch_users: int = 256, catalog=None, text_encoder: str | None = None):
        left_out: set = set()
        if isinstance(model, (str, os.PathLike)):
            from recsys.catalog import with_catalog
            from recsys.saving import load_model_dir

            model, cat = load_model_dir(model)
            if catalog is not None:
                own = cat.ids
                model, cat = with_catalog(model, cat, catalog, text_encoder=text_encoder)
                left_out = set(own) - set(cat.ids)
            item_ids, id_kind = cat.ids, cat.id_kind  # a Catalog's ids are canonical strings already
        elif catalog is not None:
            raise ValueError("catalog needs a model directory (its items.json says which items the model knows)")
        elif item_ids is not None:
            item_ids = [idk.id_string(i) for i in item_ids]
        if item_ids is None:
            raise ValueError("pass item_ids (internal index -> original id) with the model")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.model, self.k, self.exclude_seen, self.batch_users = model.eval(), k, exclude_seen, batch_users
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.id_kind = id_kind
        self.lookup = {s: i for i, s in enumerate(self.item_ids)}
        self.left_out = left_out  # ids the model knows that the catalog leaves out
        self.stats = {"users": 0, "unknown_items": 0, "users_with_unknown": 0, "outside_catalog_items": 0,
                      "errors": 0}

    def __call__(self, df: pd.DataFrame) -> pd.DataFrame:
        """Histories with user, item[, timestamp] columns (named as in the training data, `recsys.data.find_column`;
        ids of any type) -> the output rows, user ids in the caller's dtype."""
        cu, ci, ct = columns(df.columns, "the histories")
        df = df.reset_index(drop=True)
        absent = df[cu].isna().to_numpy()
        if absent.any():
            raise ValueError(f"{cu} is missing in {int(absent.sum())} row(s), first at row {int(absent.argmax())}")
        items = np.full(len(df), None, dtype=object)
        present = df[ci].notna().to_numpy()
        items[present] = idk.id_strings(df[ci][present])  # the one conversion of the caller's item ids
        return self.score_rows(df[cu], items, df[ct] if ct is not None else None, df[cu].dtype)

    def score_rows(self, users: pd.Series, items: np.ndarray, timestamps: pd.Series | None, user_dtype) -> pd.DataFrame:
        """The output rows of histories given as columns: `users` (any type; one history per distinct value),
        `items` canonical id strings (None or NaN: an "empty history" marker), `timestamps` (None: row order is time
        order). User ids come back as `user_dtype`, the only conversion they get."""
        n = len(users)
        ts = pd.to_numeric(timestamps, errors="coerce").to_numpy() if timestamps is not None else np.zeros(n)
        work = pd.DataFrame({"user": users.to_numpy(), "item": items, "_ts": ts, "_row": np.arange(n)})
        work["_first"] = work.groupby("user", sort=False)["_row"].transform("min")
        work = work.sort_values(["_first", "_ts", "_row"], kind="stable")
        users_out, hists, errors = [], [], []
        for _, g in work.groupby("_first", sort=True):
            users_out.append(g["user"].iloc[0])
            hist, error = self._history([s for s in g["item"] if isinstance(s, str) and s.strip()])
            hists.append(hist)
            errors.append(error)
        self.stats["users"] += len(users_out)
        out = []
        ok = [i for i, h in enumerate(hists) if h is not None]
        for s in range(0, len(ok), self.batch_users):
            idx = ok[s: s + self.batch_users]
            items_k, scores = self.model.recommend([hists[i] for i in idx], k=self.k, exclude_seen=self.exclude_seen)
            items_k, scores = items_k.cpu().numpy(), scores.float().cpu().numpy()
            for j, i in enumerate(idx):
                keep = items_k[j] >= 0
                m = int(keep.sum())
                out.append(pd.DataFrame({"user_id": users_out[i], "rank": np.arange(1, m + 1),
                                         "item_id": self.item_ids[items_k[j][keep]], "score": scores[j][keep],
                                         "error": None, "_u": i}))
        bad = [i for i, e in enumerate(errors) if e is not None]
        self.stats["errors"] += len(bad)
        if bad:
            out.append(pd.DataFrame({"user_id": [users_out[i] for i in bad], "rank": None, "item_id": None,
                                     "score": None, "error": [errors[i] for i in bad], "_u": bad}))
        if not out:
            return empty_output(self.id_kind, user_dtype)
        res = pd.concat(out, ignore_index=True).sort_values(["_u", "rank"], kind="stable").drop(columns="_u")
        return _typed(res.reset_index(drop=True), self.id_kind, user_dtype)

    def _history(self, raw: list[str]) -> tuple[list[int] | None, str | None]:
        """(internal item indices, None) of one user's canonical item ids in time order, or (None, why not)."""
        known = [self.lookup[s] for s in raw if s in self.lookup]
        outside = sum(s not in self.lookup and s in self.left_out for s in raw)
        unknown = len(raw) - len(known) - outside
        self.stats["unknown_items"] += unknown
        self.stats["users_with_unknown"] += unknown > 0
        self.stats["outside_catalog_items"] += outside
        if known:
            return known, None
        if not raw:
            return None, "empty history"
        if outside:
            return None, f"no items in the catalog ({outside} outside it, {unknown} unknown to the model)"
        return None, f"no known items ({unknown} unknown to the model)"


def user_id_dtype(kind: str):
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


def empty_output(item_kind: str, user_dtype) -> pd.DataFrame:
    """No output rows, in the output's column types."""
    return _typed(pd.DataFrame({c: pd.Series([], dtype=object) for c in OUT_COLUMNS}), item_kind, user_dtype)


def output_schema(item_kind: str, user_dtype) -> pa.Schema:
    """The Arrow schema every output file holds: the column types of `_typed`, and pandas metadata so that reading
    the file back gives the same dtypes (nullable `rank`, string or Int64 `item_id`)."""
    return pa.Schema.from_pandas(empty_output(item_kind, user_dtype), preserve_index=False)


def output_table(df: pd.DataFrame, item_kind: str, user_dtype) -> pa.Table:
    """Scored rows (what `BatchScorer` returns, already in the output types) as an Arrow table of `output_schema`."""
    return pa.Table.from_pandas(df, schema=output_schema(item_kind, user_dtype), preserve_index=False)


def partition_of(users: pd.Series, n: int) -> np.ndarray:
    """(m,) the hash partition in [0, n) of each canonical user id string: a user's rows all land in one."""
    return np.fromiter((zlib.crc32(u.encode()) % n for u in users), dtype=np.int64, count=len(users))


def score_partition(scorer: BatchScorer, df: pd.DataFrame, user_dtype) -> pd.DataFrame:
    """The output rows of one partition of spilled input: rows of complete users (`user_id`, `item_id` as canonical
    strings, `timestamp`, `line`) in any order -> `scorer`'s rows, user ids as `user_dtype`. The local driver and the
    Ray/Spark jobs (`recsys.engines`) all score through this, so their rows agree. Ids are converted once, at output."""
    if not len(df):
        return empty_output(scorer.id_kind, user_dtype)
    df = df.sort_values("line", kind="stable")
    return scorer.score_rows(df["user_id"], df["item_id"].to_numpy(dtype=object), df["timestamp"], user_dtype)


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
    check_input(input_path)
    # the model (and catalog) first: a wrong model directory is reported before the input is read
    scorer = BatchScorer(model_dir, k=k, exclude_seen=exclude_seen, batch_users=batch_users, catalog=catalog,
                         text_encoder=text_encoder)
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
            part = partition_of(chunk["user_id"], P)
            for p in mine:
                sel = chunk[part == p]
                if len(sel):
                    f = work / f"in-{p:05d}.csv"
                    sel.to_csv(f, mode="a", header=not f.exists(), index=False)
        # every rank reads the whole file, so every rank knows the type of all its user ids before scoring
        atomic_write_json(done_marker, {"rows": n_rows, "malformed": n_bad, "malformed_rows": malformed,
                                        "user_kind": file_user_kind(kinds)})
    user_kind = json.loads(done_marker.read_text()).get("user_kind", idk.STR)
    user_dtype = user_id_dtype(user_kind)

    # pass 2: score each unfinished partition, atomically
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
        write_parquet_atomic(output_table(res, scorer.id_kind, user_dtype), part_out)
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
    """Concatenate the partition outputs in partition order into `work/merged.*` (streamed: one partition in memory
    at a time), then commit it to `out_path` atomically; returns the summed counts."""
    totals = {"users": 0, "unknown_items": 0, "users_with_unknown": 0, "outside_catalog_items": 0, "errors": 0,
              "rows": 0}
    merged = work / f"merged{out_path.suffix.lower()}"
    merged.unlink(missing_ok=True)  # a merge cut short by a kill
    csv = out_path.suffix.lower() == ".csv"
    schema = output_schema(id_kind, user_dtype)
    if csv:
        empty_output(id_kind, user_dtype).to_csv(merged, index=False)
    with contextlib.nullcontext() if csv else pq.ParquetWriter(merged, schema) as writer:
        for p in range(P):
            table = pq.read_table(work / f"out-{p:05d}.parquet")
            stats = json.loads((work / f"out-{p:05d}.json").read_text())
            for key in stats:
                totals[key] += stats[key]
            totals["rows"] += table.num_rows
            if csv:
                table.to_pandas().to_csv(merged, mode="a", header=False, index=False)
            else:
                writer.write_table(table)
    commit_file(merged, out_path)
    malformed, reported = 0, []
    for r in range(world):
        m = json.loads((work / f"spilled-r{r}.json").read_text())
        if r == 0:  # every rank reads the whole file; rank 0's count is the file's
            malformed, reported = m["malformed"], m["malformed_rows"]
    totals.update(malformed_rows=malformed, malformed=[{"line": l, "reason": why} for l, why in reported])
    return totals


def commit_file(src: Path, dst: Path) -> None:
    """Publish the finished file `src` as `dst` atomically through `gentok.files.atomic_write_bytes` (the one place
    that commits files), mapped rather than read into memory. Costs one copy of the output; a gentok.files helper
    that commits a finished temp file in place would save it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            atomic_write_bytes(dst, b"")
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            atomic_write_bytes(dst, data)


def format_summary(s: dict, out_path) -> str:
    lines = [f"scored {s['users']} users -> {out_path} ({s['rows']} rows, {s['seconds']:.1f}s, "
             f"{s['users_per_second']:.0f} users/s, {s['processes']} process(es), {s['partitions']} partition(s))",
             f"  unknown items dropped: {s['unknown_items']} (in {s['users_with_unknown']} users)"
             + (f"; items outside the catalog dropped: {s['outside_catalog_items']}"
                if s.get("outside_catalog_items") else ""),
             f"  users with an error entry (no usable history): {s['errors']}",
             f"  malformed rows skipped: {s['malformed_rows']}"]
    for m in s["malformed"][:10]:
        lines.append(f"    line {m['line']}: {m['reason']}")
    if s["malformed_rows"] > 10:
        lines.append(f"    ... ({s['malformed_rows'] - 10} more; see the .summary.json)")
    return "\n".join(lines)
