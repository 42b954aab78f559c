"""The DNA edge of a tokenizer: what `encode` accepts, and FASTA files in and out for the `gentok` CLI.

`encode_files` gives one `Tokens` row per FASTA file: the ids of all its records back to back, and in
`Tokens.extras` what the model does not carry: the record table (`num_records`, `record_tokens`, `record_bases`), the
headers as UTF-8 bytes (`headers`, `header_bytes`), and the soft-masked / N runs as (record, start, end, kind) rows
(`runs`, `num_runs`). Every table has a count beside it, so the zero padding `Tokens.cat` adds when the CLI joins
batches is never read. Decoding writes FASTA with the same headers, the same case and the same N stretches; only
the A/C/G/T calls come from the model. A gzipped input (`.gz`) is written back gzipped under the same name.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gentok.tokenizers.dna.fasta import (RUN_LOWER, RUN_N, DNARecord, parse_fasta, parse_sequence, read_fasta,
                                         record_runs, runs_to_mask, write_fasta)
from gentok.tokenizers.tokens import Tokens, pad_stack

FILE_EXTRAS = ("num_records", "record_tokens", "record_bases", "headers", "header_bytes", "runs", "num_runs")

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas", ".fa.gz", ".fasta.gz", ".fna.gz", ".fas.gz")


def _looks_like_path(text: str) -> bool:
    """True for a str no DNA string can be: one holding a path separator or ending in a FASTA suffix."""
    seps = [os.sep] + ([os.altsep] if os.altsep else []) + ["/"]
    return any(s in text for s in seps) or text.lower().endswith(FASTA_SUFFIXES)


def to_records(x) -> list[DNARecord]:
    """A base string, FASTA text ('>' first), a FASTA path (plain or gzipped), a `DNARecord`, or a (nested) list of
    these -> records, one per sequence."""
    items = list(x) if isinstance(x, (list, tuple)) else [x]
    if not items:
        raise ValueError("expected at least one sequence")
    out: list[DNARecord] = []
    for item in items:
        if isinstance(item, DNARecord):
            if len(item) == 0:
                raise ValueError(f"empty sequence {item.name!r}")
            out.append(item)
        elif isinstance(item, (list, tuple)):  # e.g. `read_assets`: one list of records per file
            out += to_records(item)
        elif isinstance(item, os.PathLike):
            out += read_fasta(item)
        elif isinstance(item, str):
            stripped = item.strip()
            if stripped.startswith(">"):
                out += parse_fasta(stripped)
            elif stripped and (os.path.isfile(stripped) or _looks_like_path(stripped)):
                out += read_fasta(stripped)  # a missing file says so, not "invalid DNA character '/'"
            elif not stripped:
                raise ValueError("empty sequence")
            else:
                out.append(parse_sequence("".join(stripped.split()), name=f"sequence{len(out) + 1}"))
        else:
            raise ValueError(f"expected a DNA string, FASTA text or FASTA path, got {type(item).__name__}")
    return out


def _pad_stack(rows: list[Tensor]) -> Tensor:
    """Zero-padded stack of (n_i, ...) tensors; at least one column so every file has the table."""
    return pad_stack(rows, 0, min_width=1)


def _file_tables(records: list[DNARecord]) -> dict[str, Tensor]:
    """The side tables of one file (no batch dimension)."""
    header = torch.tensor(list("\n".join(r.name for r in records).encode()), dtype=torch.uint8)
    runs = [np.concatenate([np.full((len(rr), 1), j), rr], 1) for j, rec in enumerate(records)
            for rr in [record_runs(rec)]]
    runs = torch.from_numpy(np.concatenate(runs).reshape(-1, 4).astype(np.int64))
    return {"record_bases": torch.tensor([len(r) for r in records], dtype=torch.long), "headers": header,
            "runs": runs}


class DNAAssetsMixin:
    """`read_assets` / `write_assets` / `encode_files` / `decode_to_files` for DNA tokenizers with `encode`/`decode`
    (`encode` -> `Tokens` one row per sequence, `decode` -> one base string per row)."""

    def bits_summary(self, tokens: Tokens) -> str:
        """The base summary plus bits per base when the tokens carry their files' record tables (`encode_files`)."""
        text = super().bits_summary(tokens)
        bases = tokens.extras.get("record_bases")  # bases per record (zero padding adds nothing)
        if bases is not None and int(bases.sum()):
            text += f", {float(tokens.bits_per_item.sum()) / int(bases.sum()):.2f} bits per base"
        return text

    def read_assets(self, paths):
        """FASTA paths -> one list of records per file."""
        return [read_fasta(p) for p in paths]

    def write_assets(self, x, out_dir, names):
        """x: one list of (header, sequence) per file -> FASTA files `out_dir/<name>` (gzipped when it ends in .gz)."""
        out_dir = Path(out_dir)
        return [write_fasta(out_dir / Path(name).name, records) for records, name in zip(x, names)]

    def encode_files(self, paths, **options) -> Tokens:
        """FASTA files -> `Tokens` with one row per file (all its records' ids back to back) and the record tables
        in `extras` (see the module docstring). `options` go to `encode` (e.g. `tokens_per_window`)."""
        per_file = self.read_assets(paths)
        flat = [rec for records in per_file for rec in records]
        tokens = self.encode(flat, **options)  # one row per record, all files in one batch
        rows, counts, tables, k = [], [], [], 0
        for records in per_file:
            mine = range(k, k + len(records))
            k += len(records)
            rows.append(torch.cat([tokens.item(i) for i in mine]))
            counts.append(tokens.lengths[list(mine)].cpu())
            tables.append(_file_tables(records))
        extras = {"num_records": torch.tensor([len(r) for r in per_file], dtype=torch.long),
                  "record_tokens": _pad_stack(counts),
                  "header_bytes": torch.tensor([len(t["headers"]) for t in tables], dtype=torch.long),
                  "num_runs": torch.tensor([len(t["runs"]) for t in tables], dtype=torch.long)}
        extras.update({key: _pad_stack([t[key] for t in tables]) for key in ("record_bases", "headers", "runs")})
        return Tokens.from_rows(rows, meta=tokens.meta, extras=extras)

    def decode_to_files(self, tokens: Tokens, out_dir, names, **options) -> list[Path]:
        """`Tokens` from `encode_files` -> FASTA files with the original headers, case and N runs.
        `options` go to `decode` (e.g. `batch_size`)."""
        if not isinstance(tokens, Tokens):
            raise ValueError(f"decode_to_files expects Tokens from encode_files, got {type(tokens).__name__}")
        missing = [k for k in FILE_EXTRAS if k not in tokens.extras]
        if missing:
            raise ValueError(f"token file lacks {missing}: it was not written by a DNA tokenizer's encode_files")
        tokens = self.as_tokens(tokens)
        ex = {k: v.cpu() for k, v in tokens.extras.items()}
        parts, heads, bases, runs = [], [], [], []
        for f in range(len(tokens)):
            nrec = int(ex["num_records"][f])
            counts = ex["record_tokens"][f, :nrec]
            ids = tokens.item(f).cpu()
            if nrec < 1 or nrec > ex["record_tokens"].shape[1] or int(counts.sum()) != len(ids) or (counts < 1).any():
                raise ValueError(f"token row {f}: the record token counts do not add up to its {len(ids)} ids")
            parts += list(torch.split(ids, counts.tolist()))
            header = bytes(ex["headers"][f, : int(ex["header_bytes"][f])].tolist()).decode("utf-8", errors="replace")
            heads.append(header.split("\n"))
            if len(heads[-1]) != nrec:
                raise ValueError(f"token row {f}: {len(heads[-1])} headers for {nrec} records")
            bases.append(ex["record_bases"][f, :nrec])
            runs.append(ex["runs"][f, : int(ex["num_runs"][f])].numpy())
        texts = iter(self.decode(Tokens.from_rows(parts, meta=tokens.meta), **options))
        files = []
        for f in range(len(tokens)):
            records = []
            for j, header in enumerate(heads[f]):
                n, text = int(bases[f][j]), next(texts)
                if len(text) != n:
                    raise ValueError(f"record {header!r} decoded to {len(text)} bases, the file recorded {n}")
                chars = np.frombuffer(text.encode(), np.uint8).copy()
                mine = runs[f][runs[f][:, 0] == j]
                chars[runs_to_mask(mine[mine[:, 3] == RUN_N][:, 1:3], n)] = ord("N")
                chars[runs_to_mask(mine[mine[:, 3] == RUN_LOWER][:, 1:3], n)] += 32
                records.append((header, chars.tobytes().decode()))
            files.append(records)
        return self.write_assets(files, out_dir, names)
