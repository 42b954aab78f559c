"""The DNA edge of a tokenizer: what `encode` accepts, and FASTA files in and out for the `gentok` CLI.

A token file keeps, per input FASTA file: the token ids of all its records back to back (`ids`, `num_tokens`), how
many tokens and bases each record has (`record_tokens`, `record_bases`), the headers as UTF-8 bytes (`headers`), and
the soft-masked / N runs as (record, start, end, kind) rows (`runs`, -1 padded). Decoding writes FASTA with the same
headers, the same case and the same N stretches; only the A/C/G/T calls come from the model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gentok.tokenizers.dna.fasta import (RUN_LOWER, RUN_N, DNARecord, parse_fasta, parse_sequence, read_fasta,
                                         record_runs, runs_to_mask, write_fasta)


def to_records(x) -> list[DNARecord]:
    """A base string, FASTA text ('>' first), a FASTA path (plain or gzipped), a `DNARecord`, or a list of these."""
    items = list(x) if isinstance(x, (list, tuple)) else [x]
    if not items:
        raise ValueError("expected at least one sequence")
    out: list[DNARecord] = []
    for item in items:
        if isinstance(item, DNARecord):
            out.append(item)
        elif isinstance(item, os.PathLike):
            out += read_fasta(item)
        elif isinstance(item, str):
            stripped = item.strip()
            if stripped.startswith(">"):
                out += parse_fasta(stripped)
            elif stripped and os.path.isfile(stripped):
                out += read_fasta(stripped)
            elif not stripped:
                raise ValueError("empty sequence")
            else:
                out.append(parse_sequence("".join(stripped.split()), name=f"sequence{len(out) + 1}"))
        else:
            raise ValueError(f"expected a DNA string, FASTA text or FASTA path, got {type(item).__name__}")
    return out


def _pad_stack(rows: list[Tensor], fill: int) -> Tensor:
    width = max([len(r) for r in rows] + [1])
    out = torch.full((len(rows), width) + tuple(rows[0].shape[1:]), fill, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


class DNAAssetsMixin:
    """`read_assets` / `write_assets` / `encode_files` / `decode_to_files` for DNA tokenizers with `encode`/`decode`."""

    def read_assets(self, paths):
        """FASTA paths -> one list of records per file."""
        return [read_fasta(p) for p in paths]

    def write_assets(self, x, out_dir, names):
        """x: one list of (header, sequence) per file -> FASTA files `out_dir/<name without .gz>`."""
        out_dir = Path(out_dir)
        written = []
        for records, name in zip(x, names):
            stem = Path(name).name
            stem = stem[:-3] if stem.endswith(".gz") else stem
            written.append(write_fasta(out_dir / stem, records))
        return written

    def encode_files(self, paths) -> dict[str, Tensor]:
        per_file = self.read_assets(paths)
        ids, num, rec_tok, rec_bases, headers, runs = [], [], [], [], [], []
        for records in per_file:
            tokens = self.encode(records)
            ids.append(torch.cat([tokens.ids[i, : int(k)] for i, k in enumerate(tokens.num_tokens)]))
            num.append(int(tokens.num_tokens.sum()))
            rec_tok.append(tokens.num_tokens.clone())
            rec_bases.append(torch.tensor([len(r) for r in records]))
            headers.append(torch.tensor(list("\n".join(r.name for r in records).encode()), dtype=torch.uint8))
            file_runs = [np.concatenate([np.full((len(rr), 1), j), rr], 1) for j, rec in enumerate(records)
                         for rr in [record_runs(rec)]]
            runs.append(torch.from_numpy(np.concatenate(file_runs).reshape(-1, 4).astype(np.int64)))
        return {"ids": _pad_stack(ids, 0), "num_tokens": torch.tensor(num), "record_tokens": _pad_stack(rec_tok, 0),
                "record_bases": _pad_stack(rec_bases, 0), "headers": _pad_stack(headers, 0),
                "runs": _pad_stack(runs, -1) if any(len(r) for r in runs) else torch.full((len(runs), 1, 4), -1)}

    def decode_to_files(self, tensors: dict[str, Tensor], out_dir, names) -> list[Path]:
        need = ("ids", "num_tokens", "record_tokens", "record_bases", "headers", "runs")
        missing = [k for k in need if k not in tensors]
        if missing:
            raise ValueError(f"token file lacks {missing}: it was not written by a DNA tokenizer's encode_files")
        files = []
        for f in range(tensors["ids"].shape[0]):
            counts = tensors["record_tokens"][f]
            nrec = int((tensors["record_bases"][f] > 0).sum())
            ids = tensors["ids"][f, : int(tensors["num_tokens"][f])]
            if int(counts[:nrec].sum()) != len(ids):
                raise ValueError(f"token file row {f}: record token counts do not add up to num_tokens")
            parts = list(torch.split(ids, counts[:nrec].tolist()))
            from gentok.tokenizers.dna.mergedna import DNATokens  # the tokens type lives with the model

            rows = torch.nn.utils.rnn.pad_sequence(parts, batch_first=True)
            texts = self.decode(DNATokens(rows, counts[:nrec].long(), self.config.window))
            header_bytes = bytes(tensors["headers"][f].to(torch.uint8).tolist()).rstrip(b"\0")
            heads = header_bytes.decode("utf-8", errors="replace").split("\n")
            runs = tensors["runs"][f]
            runs = runs[runs[:, 0] >= 0].numpy()
            records = []
            for j, text in enumerate(texts):
                n = int(tensors["record_bases"][f, j])
                if len(text) != n:
                    raise ValueError(f"record {heads[j]!r} decoded to {len(text)} bases, the file recorded {n}")
                chars = np.frombuffer(text.encode(), np.uint8).copy()
                mine = runs[runs[:, 0] == j]
                chars[runs_to_mask(mine[mine[:, 3] == RUN_N][:, 1:3], n)] = ord("N")
                lower = runs_to_mask(mine[mine[:, 3] == RUN_LOWER][:, 1:3], n)
                chars[lower] += 32
                records.append((heads[j], chars.tobytes().decode()))
            files.append(records)
        return self.write_assets(files, out_dir, names)
