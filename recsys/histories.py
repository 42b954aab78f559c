"""Reading files of user histories for batch scoring: CSV/TSV, JSON lines or Parquet in long form (`user_id,
item_id[, timestamp]`, one interaction per row), streamed in chunks.

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


def iter_input(path: str | os.PathLike, chunk_rows: int = 100_000):
    """Yield `Chunk`s of the file at `path` (.csv, .tsv, .jsonl/.ndjson or .parquet)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"input {path} does not exist")
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv"):
        yield from _iter_csv(p, chunk_rows, "\t" if suffix == ".tsv" else ",")
    elif suffix in (".jsonl", ".ndjson"):
        yield from _iter_jsonl(p, chunk_rows)
    elif suffix == ".parquet":
        yield from _iter_parquet(p, chunk_rows)
    else:
        raise ValueError(f"{path}: unsupported input type {suffix!r} (use .csv, .tsv, .parquet or .jsonl)")


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
        cols = [h.strip().lower() for h in header]
        if "user_id" not in cols or "item_id" not in cols:
            raise ValueError(f"{p}: header must name user_id and item_id (optionally timestamp), got {header}")
        iu, ii = cols.index("user_id"), cols.index("item_id")
        it = cols.index("timestamp") if "timestamp" in cols else None
        rows, bad = [], []
        for rec in reader:
            line = reader.line_num
            if len(rec) != len(cols):
                if rec:  # blank lines are not rows
                    bad.append((line, f"expected {len(cols)} fields, got {len(rec)}"))
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
    rows, users, bad = [], [], []
    with open(p, encoding="utf-8") as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as e:
                bad.append((line, f"invalid JSON ({e.msg})"))
                continue
            if not isinstance(rec, dict) or "user_id" not in rec:
                bad.append((line, "not an object with user_id"))
                continue
            user, item, ts = rec.get("user_id"), rec.get("item_id"), rec.get("timestamp")
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
    names = [n.lower() for n in f.schema_arrow.names]
    if "user_id" not in names or "item_id" not in names:
        raise ValueError(f"{p}: columns must include user_id and item_id, got {f.schema_arrow.names}")
    start = 1
    for batch in f.iter_batches(batch_size=chunk_rows):
        df = batch.to_pandas()
        df.columns = [c.lower() for c in df.columns]
        ts = df["timestamp"] if "timestamp" in df.columns else pd.Series([None] * len(df))
        rows, keep, bad = [], [], []
        for i, (u, it, t) in enumerate(zip(df["user_id"], df["item_id"], ts)):
            why = _check_row(u, t)
            if why:
                bad.append((start + i, why))
                continue
            keep.append(i)
            rows.append((idk.id_string(u), None if missing(it) else idk.id_string(it), None if missing(t) else t,
                         start + i))
        start += len(df)
        yield _chunk(rows, bad, idk.column_kind(df["user_id"].iloc[keep]))
