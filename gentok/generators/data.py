"""Token sequences for training generators: encode a dataset once with a tokenizer and cache the ids as safetensors.

The cache records what produced it (a hash of the tokenizer's weights and config, the number of items and a data
tag); a cache made by anything else is recomputed rather than silently reused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from gentok.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from gentok.files import atomic_write_bytes
from gentok.validate import PAD_ID


class TokenRows(Dataset):
    """Rows of an id tensor (n, L) as a dataset of LongTensors (L,)."""

    def __init__(self, ids: Tensor):
        if ids.ndim != 2 or ids.dtype.is_floating_point:
            raise ValueError(f"expected integer ids of shape (n, L), got {ids.dtype} {tuple(ids.shape)}")
        self.ids = ids.long()

    def __len__(self) -> int:
        return self.ids.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        return self.ids[i]


def tokenizer_fingerprint(tokenizer_dir: str | Path) -> str:
    """sha256 of a saved tokenizer's config and weights: what a token cache was made with."""
    h = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        h.update((Path(tokenizer_dir) / name).read_bytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def pretokenize(tokenizer, dataset: Dataset, cache: str | Path, fingerprint: str, tag: str = "",
                batch_size: int = 128, limit: int | None = None) -> Tensor:
    """ids (n, K) of `dataset[:limit]` encoded by `tokenizer` (its `encode` returns `Tokens`), read from `cache` when it was made by the same
    (fingerprint, n, tag), otherwise computed (with a progress bar) and written atomically."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    meta = {"fingerprint": fingerprint, "n": str(n), "tag": tag}
    cache = Path(cache)
    if cache.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(cache), "pt") as f:
                if f.metadata() == meta:
                    return load_file(str(cache))["ids"]
        except (OSError, RuntimeError, ValueError):
            pass  # unreadable cache: recompute
    tokenizer.eval()
    loader = DataLoader(torch.utils.data.Subset(dataset, range(n)), batch_size=batch_size, shuffle=False)
    chunks = [tokenizer.encode(batch).ids.cpu() for batch in tqdm(loader, desc=f"tokenize {cache.name}")]
    ids = torch.cat(chunks).long()
    if ids.ndim != 2:
        raise ValueError(f"generators model flat sequences; this tokenizer returned ids of shape {tuple(ids.shape)}")
    if (ids == PAD_ID).any():
        raise ValueError("generators model fixed-length sequences; this tokenizer returned padded (ragged) tokens")
    atomic_write_bytes(cache, save({"ids": ids.contiguous()}, metadata=meta))
    return ids


def describe(ids: Tensor) -> str:
    return json.dumps({"sequences": ids.shape[0], "length": ids.shape[1], "distinct_ids": int(ids.unique().numel())})
