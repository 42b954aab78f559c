"""Where large image datasets live on disk, read as shards of raw records (encoded image bytes + an optional label).

Four forms besides a folder held in memory, each cut into shards, the unit that processes and loader workers split
between them (`gentok.data.streams`):
- `imagefolder`: a tree `ROOT/<class>/<image>` (labels: the sorted class folder names); a shard is one file. When
  ROOT holds `train/` and `val/` (or `validation/`) trees, those are the training and held-out splits.
- `webdataset`: tar files in the WebDataset layout (the files of one sample are consecutive and share the name up to
  the first dot: `000123.jpg`, `000123.cls`), given as paths, a folder of `.tar` files, or a brace/glob pattern
  (`shards/train-{0000..0127}.tar`); a shard is one tar file. A `.cls` (or `.label`) member holds an integer label.
- `parquet`: Parquet files with an image column (bytes, or Hugging Face's {bytes, path} struct) and an optional
  integer label column; a shard is one row group.
- `hf`: a Hugging Face `datasets` directory written by `save_to_disk` (Arrow files, `state.json`,
  `dataset_info.json`; a `DatasetDict` directory gives its `train` and `validation`/`test` splits), read with pyarrow,
  no `datasets` package needed; a shard is one record batch.
Records are decoded later, after shuffling, so a reader can skip records cheaply and a corrupt image costs nothing
until it is met (`gentok.data.streams` skips and counts it).
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gentok.data.photos import IMAGE_SUFFIXES

FORMATS = ("folder", "imagefolder", "webdataset", "parquet", "hf")
IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp")
LABEL_COLUMNS = ("label", "labels", "cls", "class", "target")
_TAR_IMAGE = {s.lstrip(".") for s in IMAGE_SUFFIXES} | {"ppm"}
_TAR_LABEL = ("cls", "label", "class", "cls.txt")
_EVAL_SPLITS = ("val", "validation", "test")


@dataclass(frozen=True)
class Shard:
    """One unit of a dataset: `kind` in ('file', 'tar', 'parquet', 'arrow'), the file, and the part inside it (row
    group, record batch) or, for an ImageFolder file, its label."""
    kind: str
    path: str
    part: int = 0
    label: int | None = None


@dataclass(frozen=True)
class Record:
    key: str  # names the record in messages: "shard.tar:000123", "data.parquet:17"
    data: bytes | None
    label: int | None = None
    error: str | None = None  # why the record has no image


@dataclass(frozen=True)
class Layout:
    """A dataset form found on disk: its training and held-out shards, and class names when it has labels."""
    form: str
    root: str
    train: tuple[Shard, ...]
    held_out: tuple[Shard, ...]
    classes: tuple[str, ...] = ()


# -- finding the form -----------------------------------------------------------------------------------------------
def expand_pattern(pattern: str) -> list[str]:
    """Brace ranges and lists (`{000..127}`, `{a,b}`) and shell globs -> the sorted existing paths they name."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m:
        inner = m.group(1)
        rng = re.fullmatch(r"(\d+)\.\.(\d+)", inner)
        if rng:
            lo, hi = rng.groups()
            width = len(lo) if lo.startswith("0") else 0
            items = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
        else:
            items = inner.split(",")
        out = itertools.chain.from_iterable(
            expand_pattern(pattern[:m.start()] + item + pattern[m.end():]) for item in items)
        return sorted(set(out))
    return sorted(glob.glob(pattern)) if glob.has_magic(pattern) else ([pattern] if os.path.exists(pattern) else [])


def detect_format(data: str) -> str:
    """The dataset form of `data` (module docstring): tar files or a tar pattern -> 'webdataset'; Parquet files or a
    folder of them -> 'parquet'; a `save_to_disk` folder -> 'hf'; a folder with `train/` and `val/` class trees ->
    'imagefolder'; any other folder -> 'folder' (in memory, subfolders are sources). An ImageFolder tree without a
    split is read as one with `--data-format imagefolder`."""
    paths = expand_pattern(data)
    if not paths:
        raise ValueError(f"data {data} does not exist (a folder, files, or a pattern such as "
                         "shards-{000..009}.tar or *.parquet)")
    if all(_is_tar(p) for p in paths):
        return "webdataset"
    if all(p.endswith(".parquet") for p in paths):
        return "parquet"
    if len(paths) > 1 or not os.path.isdir(paths[0]):
        raise ValueError(f"data {data}: expected a folder, tar shards or Parquet files, got {paths[:3]}")
    root = Path(paths[0])
    if (root / "state.json").is_file() or (root / "dataset_dict.json").is_file():
        return "hf"
    files = [p for p in root.iterdir() if p.is_file()]
    if files and all(_is_tar(str(p)) for p in files):
        return "webdataset"
    if files and all(p.suffix == ".parquet" for p in files):
        return "parquet"
    if (root / "train").is_dir() and any((root / s).is_dir() for s in _EVAL_SPLITS):
        return "imagefolder"
    return "folder"


def find_dataset(data: str, form: str | None = None) -> Layout:
    """The shards of `data` in `form` (detected when None); held-out shards per form: the `val` split of an ImageFolder
    tree or `DatasetDict` when there is one, otherwise the last shard (every 5th image of each class for an
    ImageFolder tree without a split)."""
    form = form or detect_format(data)
    if form not in FORMATS or form == "folder":
        raise ValueError(f"data format must be one of {', '.join(FORMATS[1:])} here, got {form!r}")
    return {"imagefolder": _imagefolder, "webdataset": _webdataset, "parquet": _parquet, "hf": _hf}[form](data)


def all_shards(data: str, form: str | None = None) -> list[Shard]:
    """Every shard of the tar, Parquet or `save_to_disk` dataset `data`, in order, nothing held out (batch encoding)."""
    form = form or detect_format(data)
    if form not in ("webdataset", "parquet", "hf"):
        raise ValueError(f"expected tar shards, Parquet or a save_to_disk folder, got a {form} ({data})")
    layout = {"webdataset": _webdataset, "parquet": _parquet, "hf": _hf}[form](data, hold_out=False)
    return list(layout.train + layout.held_out)


def _is_tar(path: str) -> bool:
    return path.endswith((".tar", ".tar.gz", ".tgz")) and os.path.isfile(path)


def _last_out(form: str, root: str, shards: list[Shard], classes=(), hold_out: bool = True) -> Layout:
    if not hold_out:
        if not shards:
            raise ValueError(f"{root}: no shards")
        return Layout(form, root, tuple(shards), (), tuple(classes))
    if len(shards) < 2:
        raise ValueError(f"{root}: {len(shards)} shard(s); a {form} dataset needs at least 2 (the last one is held "
                         "out for evaluation)")
    return Layout(form, root, tuple(shards[:-1]), (shards[-1],), tuple(classes))


def _imagefolder(data: str) -> Layout:
    root = Path(data)
    if not root.is_dir():
        raise ValueError(f"ImageFolder root {root} is not a folder")
    split = next((root / s for s in _EVAL_SPLITS if (root / s).is_dir()), None)
    tree = root / "train" if (root / "train").is_dir() and split is not None else root
    classes = sorted(d.name for d in tree.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"ImageFolder tree {tree} has no class folders (expected {tree}/<class>/<image>)")

    def files(base: Path) -> list[list[Shard]]:
        out = []
        for c, name in enumerate(classes):
            d = base / name
            paths = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) \
                if d.is_dir() else []
            out.append([Shard("file", str(p), 0, c) for p in paths])
        return out

    per_class = files(tree)
    if not any(per_class):
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under the class folders of {tree}")
    if split is not None:
        held = [s for group in files(split) for s in group]
        train = [s for group in per_class for s in group]
    else:  # every 5th image of each class with at least two is held out (as a user folder's sources are)
        train, held = [], []
        for group in per_class:
            for i, s in enumerate(group):
                (held if len(group) >= 2 and (i % 5 == 4 or (len(group) < 5 and i == len(group) - 1))
                 else train).append(s)
    if not train or not held:
        raise ValueError(f"ImageFolder {root}: need training and held-out images, got {len(train)} and {len(held)}")
    return Layout("imagefolder", str(root), tuple(train), tuple(held), tuple(classes))


def _webdataset(data: str, hold_out: bool = True) -> Layout:
    paths = expand_pattern(data)
    if len(paths) == 1 and os.path.isdir(paths[0]):
        paths = sorted(str(p) for p in Path(paths[0]).iterdir() if _is_tar(str(p)))
    return _last_out("webdataset", data, [Shard("tar", p) for p in paths if _is_tar(p)], (), hold_out)


def _parquet(data: str, hold_out: bool = True) -> Layout:
    paths = expand_pattern(data)
    if len(paths) == 1 and os.path.isdir(paths[0]):
        paths = sorted(str(p) for p in Path(paths[0]).iterdir() if p.suffix == ".parquet")
    shards = []
    for p in paths:
        meta = pq.ParquetFile(p).metadata
        shards += [Shard("parquet", p, g) for g in range(meta.num_row_groups) if meta.row_group(g).num_rows]
    classes = _hf_classes(pq.read_schema(paths[0]).metadata) if paths else ()
    return _last_out("parquet", data, shards, classes, hold_out)


def _hf(data: str, hold_out: bool = True) -> Layout:
    root = Path(data)
    if (root / "dataset_dict.json").is_file():
        splits = json.loads((root / "dataset_dict.json").read_text())["splits"]
        if "train" not in splits:
            raise ValueError(f"{root}: a DatasetDict without a 'train' split (splits: {', '.join(splits)})")
        train = _hf(str(root / "train"), hold_out)
        held_split = next((s for s in _EVAL_SPLITS if s in splits), None)
        if held_split is None:
            return train
        held = _hf(str(root / held_split), hold_out)
        return Layout("hf", str(root), train.train + train.held_out, held.train + held.held_out, train.classes)
    state = json.loads((root / "state.json").read_text())
    shards = []
    for f in state.get("_data_files", []):
        path = str(root / f["filename"])
        with pa.memory_map(path) as source:
            batches = sum(1 for _ in pa.ipc.open_stream(source))
        shards += [Shard("arrow", path, b) for b in range(batches)]
    info = root / "dataset_info.json"
    classes = _feature_classes(json.loads(info.read_text()).get("features", {})) if info.is_file() else ()
    return _last_out("hf", str(root), shards, classes, hold_out)


def _feature_classes(features: dict) -> tuple[str, ...]:
    for name in LABEL_COLUMNS:
        f = features.get(name)
        if isinstance(f, dict) and f.get("_type") == "ClassLabel":
            return tuple(f.get("names", ()))
    return ()


def _hf_classes(metadata: dict | None) -> tuple[str, ...]:
    """Class names from the features Hugging Face writes into a Parquet schema's metadata, when present."""
    raw = (metadata or {}).get(b"huggingface")
    if not raw:
        return ()
    try:
        return _feature_classes(json.loads(raw).get("info", {}).get("features", {}))
    except (ValueError, AttributeError):
        return ()


# -- reading one shard ----------------------------------------------------------------------------------------------
def read_shard(shard: Shard) -> Iterator[Record]:
    """The records of `shard`, in order; a record whose bytes cannot be read carries an `error` instead."""
    name = Path(shard.path).name
    if shard.kind == "file":
        try:
            data, error = Path(shard.path).read_bytes(), None
        except OSError as e:
            data, error = None, str(e)
        yield Record(shard.path, data, shard.label, error)
    elif shard.kind == "tar":
        yield from _tar_records(shard.path, name)
    elif shard.kind == "parquet":
        table = pq.ParquetFile(shard.path).read_row_group(shard.part)
        yield from _table_records(table, f"{name}:{shard.part}")
    elif shard.kind == "arrow":
        with pa.memory_map(shard.path) as source:
            batch = next(itertools.islice(pa.ipc.open_stream(source), shard.part, None))
            yield from _table_records(pa.Table.from_batches([batch]), f"{name}:{shard.part}")
    else:
        raise ValueError(f"unknown shard kind {shard.kind!r}")


def _tar_records(path: str, name: str) -> Iterator[Record]:
    key, files = None, {}

    def record():
        image = next((files[e] for e in files if e in _TAR_IMAGE), None)
        label_text = next((files[e] for e in _TAR_LABEL if e in files), None)
        label, error = None, None if image is not None else f"no image member ({', '.join(sorted(files))})"
        if label_text is not None:
            try:
                label = int(label_text.decode().strip())
            except ValueError:
                error = f"label {label_text[:20]!r} is not an integer"
        return Record(f"{name}:{key}", image, label, error)

    try:
        with tarfile.open(path, "r|*") as tar:  # stream mode: one pass, no index of members
            for member in tar:
                if not member.isfile():
                    continue
                d, _, base = member.name.rpartition("/")
                stem, dot, ext = base.partition(".")
                if not dot:
                    continue
                k = f"{d}/{stem}" if d else stem
                if k != key and key is not None:
                    yield record()
                    files = {}
                key = k
                files[ext.lower()] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:  # a truncated shard: its readable samples were yielded
        if key is not None:
            yield record()
            key = None
        yield Record(f"{name}:<rest>", None, None, f"unreadable tar: {e}")
    if key is not None:
        yield record()


def _column(table: pa.Table, names: tuple[str, ...], what: str, required: bool) -> str | None:
    cols = table.column_names
    found = next((c for c in names if c in cols), None)
    if found is None and what == "image":
        found = next((c for c in cols if pa.types.is_binary(table.schema.field(c).type)
                      or pa.types.is_large_binary(table.schema.field(c).type)), None)
    if found is None and required:
        raise ValueError(f"no {what} column among {', '.join(cols)} (expected one of {', '.join(names)})")
    return found


def _table_records(table: pa.Table, where: str) -> Iterator[Record]:
    image_col = _column(table, IMAGE_COLUMNS, "image", required=True)
    label_col = _column(table, LABEL_COLUMNS, "label", required=False)
    images = table.column(image_col).to_pylist()
    labels = table.column(label_col).to_pylist() if label_col else [None] * len(images)
    for i, (value, label) in enumerate(zip(images, labels)):
        if isinstance(value, dict):  # Hugging Face's Image feature: {"bytes": ..., "path": ...}
            data = value.get("bytes")
            if data is None and value.get("path") and os.path.isfile(value["path"]):
                data = Path(value["path"]).read_bytes()
        else:
            data = value if isinstance(value, (bytes, bytearray)) else None
        error = None if data is not None else f"no image bytes in column {image_col!r}"
        yield Record(f"{where}:{i}", bytes(data) if data is not None else None,
                     None if label is None else int(label), error)
