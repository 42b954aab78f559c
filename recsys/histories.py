"""Reading files of user histories for batch scoring: CSV/TSV, JSON lines or Parquet in long form (`user_id,
item_id[, timestamp]`, one interaction per row), streamed in chunks. Columns are named as in the training data
(`recsys.data.find_column`: `userId`, `movie_id`, `time`, ... are accepted too).

Each chunk carries the valid rows (ids as canonical strings, `recsys.ids`), the malformed rows with their line number
and why they were skipped, and the kind ("int"/"str") of the chunk's user ids by the rules of `recsys.ids`, so the
scorer can give the user ids back in the type the file had.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from recsys import ids as idk
from recsys.data import ITEM_COLUMNS, TIME_COLUMNS, USER_COLUMNS, find_column

COLUMNS = ["user_id", "item_id", "timestamp", "line"]


@dataclass
class Chunk:
    rows: pd.DataFrame  # user_id, item_id (canonical strings; item None for an "empty history" marker), timestamp, line
    malformed: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    user_kind: str | None = None  # kind of this chunk's user ids; None when it has no valid row


def missing(v) -> bool:
    """An absent id or timestamp: None, NaN/NA, or a blank string."""
    if isinstance(v, str):
        return v.strip() == ""
    return v is None or bool(pd.isna(v))


def file_user_kind(chunks_kinds) -> str:
    """The user id kind of a whole file from its chunks' kinds: "int" only when every non-empty chunk says so."""
    kinds = {k for k in chunks_kinds if k is not None}
    return idk.INT if kinds == {idk.INT} else idk.STR


def check_input(path: str | os.PathLike) -> Path:
    """`path` as a Path when it is a file of histories; else a `ValueError` saying what is wrong with it."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"input {path} is a directory: give one file of histories (.csv, .tsv, .parquet or .jsonl)")
    if not p.is_file():
        raise ValueError(f"input {path} does not exist")
    return p


def iter_input(path: str | os.PathLike, chunk_rows: int = 100_000):
    """Yield `Chunk`s of the file at `path` (.csv, .tsv, .jsonl/.ndjson or .parquet)."""
    p = check_input(path)
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv"):
        yield from _iter_csv(p, chunk_rows, "\t" if suffix == ".tsv" else ",")
    elif suffix in (".jsonl", ".ndjson"):
        yield from _iter_jsonl(p, chunk_rows)
    elif suffix == ".parquet":
        yield from _iter_parquet(p, chunk_rows)
    else:
        raise ValueError(f"{path}: unsupported input type {suffix!r} (use .csv, .tsv, .parquet or .jsonl)")


def columns(names, path, need: bool = True) -> tuple:
    """(user, item, timestamp) column names among `names` by the training data's policy (`find_column`); the
    timestamp is optional. `need`: raise `DataError` when the user or item column is missing (else None)."""
    user, item = ("user id", "item id") if need else (None, None)
    return (find_column(names, USER_COLUMNS, user, str(path)), find_column(names, ITEM_COLUMNS, item, str(path)),
            find_column(names, TIME_COLUMNS, None, str(path)))


def _check_row(user, ts):
    if missing(user):
        return "empty user_id"
    if ts is not None and not missing(ts):
        try:
            float(ts)
        except (TypeError, ValueError):
            return f"timestamp {ts!r} is not a number"
    return None


def _chunk(rows, bad, user_kind) -> Chunk:
    return Chunk(pd.DataFrame(rows, columns=COLUMNS), bad, user_kind if rows else None)


def _iter_csv(p: Path, chunk_rows: int, sep: str):
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=sep)
        header = next(reader, None)
        if header is None:
            return
        iu, ii, it = (None if c is None else header.index(c) for c in columns(header, p))
        rows, bad = [], []
        for rec in reader:
            line = reader.line_num
            if len(rec) != len(header):
                if rec:  # blank lines are not rows
                    bad.append((line, f"expected {len(header)} fields, got {len(rec)}"))
                continue
            ts = rec[it] if it is not None else None
            why = _check_row(rec[iu], ts)
            if why:
                bad.append((line, why))
                continue
            item = rec[ii].strip()
            rows.append((rec[iu].strip(), item or None, ts if not missing(ts) else None, line))
            if len(rows) >= chunk_rows:
                yield _chunk(rows, bad, idk.text_kind(r[0] for r in rows))
                rows, bad = [], []
        yield _chunk(rows, bad, idk.text_kind(r[0] for r in rows))


def _iter_jsonl(p: Path, chunk_rows: int):
    rows, users, bad, named = [], [], [], {}
    with open(p, encoding="utf-8") as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as e:
                bad.append((line, f"invalid JSON ({e.msg})"))
                continue
            if not isinstance(rec, dict):
                bad.append((line, "not a JSON object"))
                continue
            keys = tuple(rec)
            if keys not in named:  # records usually share their keys: resolve each set of names once
                named[keys] = columns(keys, p, need=False)
            cu, ci, ct = named[keys]
            if cu is None:
                bad.append((line, f"no user id (looked for {', '.join(USER_COLUMNS)})"))
                continue
            user, item, ts = rec[cu], None if ci is None else rec[ci], None if ct is None else rec[ct]
            why = _check_row(user, ts)
            if why:
                bad.append((line, why))
                continue
            users.append(user)
            rows.append((idk.id_string(user), None if missing(item) else idk.id_string(item), ts, line))
            if len(rows) >= chunk_rows:
                yield _chunk(rows, bad, idk.value_kind(users))
                rows, users, bad = [], [], []
    yield _chunk(rows, bad, idk.value_kind(users))


def _iter_parquet(p: Path, chunk_rows: int):
    f = pq.ParquetFile(p)
    cu, ci, ct = columns(f.schema_arrow.names, p)
    start = 1
    for batch in f.iter_batches(batch_size=chunk_rows, columns=[c for c in (cu, ci, ct) if c is not None]):
        df = batch.to_pandas()
        ts = df[ct] if ct is not None else pd.Series([None] * len(df))
        rows, keep, bad = [], [], []
        for i, (u, it, t) in enumerate(zip(df[cu], df[ci], ts)):
            why = _check_row(u, t)
            if why:
                bad.append((start + i, why))
                continue
            keep.append(i)
            rows.append((idk.id_string(u), None if missing(it) else idk.id_string(it), None if missing(t) else t,
                         start + i))
        start += len(df)
        yield _chunk(rows, bad, idk.column_kind(df[cu].iloc[keep]))
