"""Batch tokenization on an engine: asset files (a folder, or a list of files, of any family) or the records of image
datasets (WebDataset tar shards, Parquet, `save_to_disk` folders) -> a Parquet directory with one row per file or
record, the same ids as `gentok encode` gives for the same files (records go through the same file reader).

Rows: `source` (the file's path as given), `index` (its position in the input list), `ids` (list<int64>: the item's
ids without padding, flattened row-major from `shape`), `shape` (`[length]` for one codebook, `[length, q]` for q),
`length`. The family's `Tokens.meta` is stored as JSON in each file's Parquet metadata (`gentok.meta`). Per-item
`Tokens.extras` (an audio file's original rate, FASTA headers) are not stored: this output feeds training, which needs
only ids; use the safetensors token file of `gentok encode` to decode back to files.

Files are encoded in batches of `batch_size` consecutive inputs, the batches `gentok encode` makes, each batch one
engine task writing `part-<hash>.parquet`, the hash covering the model, the options, the batch's position and its
files (path, size, mtime). A rerun therefore skips batches already written, and an engine retry rewrites the same
file. `_manifest.json`, written last, lists the parts of the finished run in input order.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from gentok.checkpoint import read_config
from gentok.data.records import Shard, all_shards, detect_format, read_shard
from gentok.engines.common import content_key, fault_plan, file_key, maybe_fail, runner
from gentok.files import atomic_write_json, write_parquet_atomic
from gentok.tokenizers.tokens import Tokens

STATS = [("part", "string"), ("files", "long")]  # what each task returns to the driver
MANIFEST = "_manifest.json"
META_KEY = b"gentok.meta"


RECORD = "#"  # a source inside a dataset file: "<shard file>#<kind>:<part>:<record index>"


def expand_inputs(inputs) -> list[str]:
    """Files, folders and image datasets -> the list of sources: folders give their files recursively in sorted order,
    skipping hidden names (those starting with '.'); WebDataset tar shards, Parquet files and `save_to_disk` folders
    (`gentok.data.records`; a brace/glob pattern is one input) give one source per record,
    "<shard file>#<kind>:<part>:<index>"."""
    out, missing = [], []
    for p in map(Path, inputs):
        form = _dataset_form(str(p))
        if form is not None:
            for shard in all_shards(str(p), form):
                out += [f"{shard.path}{RECORD}{shard.kind}:{shard.part}:{i}" for i, _ in enumerate(read_shard(shard))]
        elif p.is_dir():
            out += sorted(str(f) for f in p.rglob("*")
                          if f.is_file() and not any(s.startswith(".") for s in f.relative_to(p).parts))
        elif p.is_file():
            out.append(str(p))
        else:
            missing.append(str(p))
    if missing:
        raise ValueError(f"inputs not found: {', '.join(missing)}")
    if not out:
        raise ValueError(f"no input files in {', '.join(map(str, inputs))}")
    return out


def _dataset_form(path: str) -> str | None:
    """'webdataset', 'parquet' or 'hf' when `path` (or the pattern) is such a dataset, else None (files, folders)."""
    try:
        form = detect_format(path)
    except ValueError:
        return None
    return form if form in ("webdataset", "parquet", "hf") else None


def _source_key(source: str) -> list:
    path, sep, where = source.partition(RECORD)
    return file_key(path) + ([where] if sep else [])


class _Materialized:
    """The sources of one batch as files: records of dataset files are written to a temporary folder (one read of
    each shard part), plain files stay where they are."""

    def __init__(self, sources: list[str]):
        self.sources, self.tmp = sources, None

    def __enter__(self) -> list[str]:
        wanted: dict[tuple, dict[int, int]] = {}
        for j, src in enumerate(self.sources):
            path, sep, where = src.partition(RECORD)
            if sep:
                kind, part, index = where.split(":")
                wanted.setdefault((path, kind, int(part)), {})[int(index)] = j
        paths = list(self.sources)
        if wanted:
            self.tmp = tempfile.TemporaryDirectory(prefix="gentok-records-")
            for (path, kind, part), rows in wanted.items():
                for i, rec in enumerate(read_shard(Shard(kind, path, part))):
                    if i in rows:
                        if rec.data is None:
                            raise ValueError(f"{self.sources[rows[i]]}: {rec.error}")
                        target = Path(self.tmp.name) / f"{rows[i]:06d}"
                        target.write_bytes(rec.data)
                        paths[rows[i]] = str(target)
        return paths

    def __exit__(self, *exc):
        if self.tmp is not None:
            self.tmp.cleanup()


def token_table(tokens: Tokens, sources: list[str], start: int) -> pa.Table:
    """One row per item of `tokens` (see the module docstring); item i is input `start + i`."""
    if not isinstance(tokens, Tokens):
        raise ValueError(f"encode_files must return Tokens, got {type(tokens).__name__}")
    if len(tokens) != len(sources):
        raise ValueError(f"encode_files gave {len(tokens)} items for {len(sources)} files")
    items = [tokens.item(i).cpu().numpy() for i in range(len(tokens))]
    table = pa.table({
        "source": pa.array(sources, pa.string()),
        "index": pa.array(np.arange(start, start + len(items)), pa.int64()),
        "ids": pa.array([it.reshape(-1) for it in items], pa.list_(pa.int64())),
        "shape": pa.array([list(it.shape) for it in items], pa.list_(pa.int64())),
        "length": pa.array([len(it) for it in items], pa.int64()),
    })
    return table.replace_schema_metadata({META_KEY: json.dumps(tokens.meta).encode()})


class EncodeWorker:
    """Encodes task rows (`part`, `start`, `paths` as JSON) into part files; the model loads once, in `__init__`."""

    def __init__(self, model: str, out_dir: str, options: dict, faults: dict | None = None):
        from gentok.hub import load

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tok = load(model, map_location=device).eval()
        self.out_dir, self.options, self.faults = Path(out_dir), options, faults

    def __call__(self, tasks: pd.DataFrame) -> pd.DataFrame:
        done = []
        for part, start, paths in zip(tasks["part"], tasks["start"], tasks["paths"]):
            paths = json.loads(paths)
            with torch.no_grad(), _Materialized(paths) as files:
                tokens = self.tok.encode_files(files, **self.options)
            write_parquet_atomic(token_table(tokens, paths, int(start)), self.out_dir / f"part-{part}.parquet")
            maybe_fail(self.faults, "encode")
            done.append((part, len(paths)))
        return pd.DataFrame(done, columns=[name for name, _ in STATS]).astype({"files": "int64"})


def _model_key(model) -> list:
    """What identifies the model's weights cheaply: its directory and each file's size and mtime."""
    d = Path(model)
    read_config(d)  # a ValueError naming the problem when this is not a model directory
    return [str(d.resolve())] + [file_key(f) for f in sorted(d.iterdir()) if f.is_file()
                                 and not f.name.startswith(".")]


def encode_to_parquet(model, inputs, out_dir, engine: str = "ray", batch_size: int = 16, options: dict | None = None,
                      concurrency: int | None = None, gpus_per_worker: float = 0) -> dict:
    """Tokenize `inputs` (files and folders, `expand_inputs`) with the model directory `model` on `engine` ("local",
    "ray" or "spark") into the Parquet directory `out_dir` (module docstring). Batches already written by an earlier
    run are skipped. `concurrency`: workers (Ray actors; Spark takes its parallelism from the session).

    Returns a summary: files, partitions, encoded (partitions written now), skipped, seconds."""
    t0 = time.time()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    run = runner(engine)
    paths, options = expand_inputs(inputs), dict(options or {})
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a directory for engine output, {out} is a file")
    out.mkdir(parents=True, exist_ok=True)
    mkey = _model_key(model)
    tasks = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        key = content_key(mkey, options, start, [_source_key(p) for p in chunk])
        tasks.append({"part": key, "start": start, "paths": json.dumps(chunk)})
    todo = pd.DataFrame([t for t in tasks if not (out / f"part-{t['part']}.parquet").is_file()],
                        columns=["part", "start", "paths"]).astype({"start": "int64"})
    kwargs = {"model": str(Path(model).resolve()), "out_dir": str(out.resolve()), "options": options,
              "faults": fault_plan()}
    run.map_tasks(todo, EncodeWorker, kwargs, STATS, concurrency=concurrency, gpus_per_worker=gpus_per_worker)
    parts = [f"part-{t['part']}.parquet" for t in tasks]
    lost = [p for p in parts if not (out / p).is_file()]
    if lost:
        raise RuntimeError(f"{engine} finished but {len(lost)} part file(s) are missing, e.g. {lost[0]}")
    for stale in set(p.name for p in out.glob("part-*.parquet")) - set(parts):
        (out / stale).unlink()  # written for other inputs or another model by an earlier run into this directory
    summary = {"files": len(paths), "partitions": len(tasks), "encoded": len(todo), "skipped": len(tasks) - len(todo),
               "engine": engine, "batch_size": batch_size, "seconds": round(time.time() - t0, 3)}
    atomic_write_json(out / MANIFEST, {"model": mkey[0], "options": options, "parts": parts, **summary})
    return summary


def read_encoded(out_dir) -> tuple[Tokens, list[str]]:
    """The `Tokens` (in input order, meta included) and source paths of a finished `encode_to_parquet` run."""
    out = Path(out_dir)
    if not (out / MANIFEST).is_file():
        raise ValueError(f"{out} has no {MANIFEST}: not a finished `gentok encode --engine` output")
    manifest = json.loads((out / MANIFEST).read_text())
    tables = [pq.read_table(out / p) for p in manifest["parts"]]
    meta = json.loads((tables[0].schema.metadata or {}).get(META_KEY, b"{}"))
    df = pa.concat_tables(tables).to_pandas().sort_values("index", kind="stable")
    rows = [torch.from_numpy(np.asarray(ids, dtype=np.int64).reshape(tuple(shape)))
            for ids, shape in zip(df["ids"], df["shape"])]
    return Tokens.from_rows(rows, meta=meta), df["source"].tolist()
