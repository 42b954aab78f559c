"""Genome data for MergeDNA: random windows of real genomes, with one region held out.

The default genome ships inside the `pyrodigal` wheel (offline): the Corynebacterium diphtheriae NCTC11397 chromosome
(2.46 Mbp). (The wheel's E. coli contig is left out: it is a scaffold that is about half N.) The last `holdout`
fraction of every sequence is held out for evaluation, so the model never trains on the region it is scored on.
Windows are a pure function of (seed, index).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from gentok.tokenizers.dna.fasta import DNARecord, N, read_fasta

DEFAULT_GENOMES = ("GCF_001457455.1_NCTC11397_genomic.fna.gz",)


def pyrodigal_genomes() -> list[Path]:
    """Paths of the genomes bundled with the installed `pyrodigal` wheel."""
    try:
        import pyrodigal
    except ImportError:
        raise ValueError("the default DNA data needs the `pyrodigal` package (pip install pyrodigal); "
                         "or pass --data FASTA") from None
    root = Path(pyrodigal.__file__).parent / "tests" / "data"
    paths = [root / name for name in DEFAULT_GENOMES]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"this pyrodigal install lacks its bundled genomes {missing}; pass --data FASTA instead")
    return paths


def format_bases(n: int) -> str:
    """A base count in a unit that shows it: '2,800 bases', '12.5 kbp', '2.46 Mbp', '3.10 Gbp'."""
    if n < 10_000:
        return f"{n:,} bases" if n != 1 else "1 base"
    unit, scale = next((u, s) for u, s in (("Gbp", 1e9), ("Mbp", 1e6), ("kbp", 1e3)) if n >= s)
    return f"{n / scale:.3g} {unit}" if n < 100 * scale else f"{n / scale:,.0f} {unit}"


@dataclass
class GenomeSplit:
    train: list[np.ndarray]  # uint8 base codes per training region
    held_out: list[np.ndarray]  # the held-out tail of each sequence
    names: list[str]


def split_genomes(records: list[DNARecord], holdout: float = 0.1, min_len: int = 0) -> GenomeSplit:
    """Hold out the last `holdout` fraction of every record (records shorter than `min_len` are skipped)."""
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must lie in (0, 1), got {holdout}")
    train, held, names = [], [], []
    for rec in records:
        if len(rec) < min_len:
            continue
        cut = int(round(len(rec) * (1 - holdout)))
        train.append(rec.codes[:cut])
        held.append(rec.codes[cut:])
        names.append(rec.name)
    if not train:
        raise ValueError(f"no sequence is at least {min_len} bases long")
    return GenomeSplit(train, held, names)


def load_genomes(paths: list[str | os.PathLike] | None = None) -> list[DNARecord]:
    """Records of the given FASTA files (plain or gzipped), or of the bundled default genomes."""
    paths = pyrodigal_genomes() if not paths else paths
    return [rec for p in paths for rec in read_fasta(p)]


class GenomeWindows(Dataset):
    """`count` windows of `length` bases at random offsets of `regions` (chosen by length), as LongTensors.

    Windows that are mostly N (assembly gaps) are redrawn, since they teach nothing."""

    def __init__(self, regions: list[np.ndarray], length: int, count: int, seed: int = 0, max_n: float = 0.5):
        regions = [r for r in regions if len(r) >= length]
        if not regions:
            raise ValueError(f"no sequence region is at least {length} bases long")
        self.regions, self.length = regions, length
        sizes = np.array([len(r) - length + 1 for r in regions], dtype=np.float64)
        rng = np.random.default_rng(seed)
        keep: list[tuple[int, int]] = []
        for _ in range(100):  # redraw rounds; gaps rarely cover much of a real assembly
            which = rng.choice(len(regions), size=count, p=sizes / sizes.sum())
            starts = (rng.random(count) * sizes[which]).astype(np.int64)
            keep += [(int(w), int(s)) for w, s in zip(which, starts)
                     if (regions[w][s:s + length] == N).mean() <= max_n]
            if len(keep) >= count:
                break
        keep = keep[:count]
        if len(keep) < count:
            raise ValueError(f"could not find {count} windows with at most {max_n:.0%} N bases")
        self.index = keep

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Tensor:
        w, s = self.index[i]
        return torch.from_numpy(self.regions[w][s:s + self.length].astype(np.int64))


class TiledWindows(Dataset):
    """Consecutive non-overlapping windows of `length` bases covering `regions` (a held-out set, in order)."""

    def __init__(self, regions: list[np.ndarray], length: int, limit: int | None = None):
        self.items = [r[s:s + length] for r in regions for s in range(0, len(r) - length + 1, length)]
        if limit is not None:
            self.items = self.items[:limit]
        if not self.items:
            raise ValueError(f"the held-out region is shorter than one window of {length} bases")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Tensor:
        return torch.from_numpy(self.items[i].astype(np.int64))


def default_dna_data(length: int, paths=None, train_windows: int = 20000, eval_windows: int = 256,
                     holdout: float = 0.1, seed: int = 0) -> tuple[GenomeWindows, TiledWindows, GenomeSplit]:
    """(train windows, held-out windows, split) from the user's FASTA files or the bundled genomes."""
    split = split_genomes(load_genomes(paths), holdout=holdout, min_len=length * 2)
    train = GenomeWindows(split.train, length, train_windows, seed=seed)
    held = TiledWindows(split.held_out, length, limit=eval_windows)
    return train, held, split
