"""Item tokenizer: item text embedding -> a few FSQ codes per item (RecGPT-style), plus a disambiguating suffix.

The embedding (e.g. 384-d MiniLM) is split into `n_chunks` equal chunks; each chunk is projected to the FSQ width and
quantized by the core `FSQ` (one token per chunk); a decoder maps the codes back to the embedding, so the tokenizer is
trained as a small autoencoder. After training, `build_table` freezes the item -> codes table: items whose chunk
codes coincide get suffix 0, 1, 2, ... (in catalog order), so every item has a unique code sequence of length
`n_chunks + 1`. New items are encoded from their embedding alone (`add_items`) without retraining.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gentok.config import config, replace
from gentok.hub import PretrainedMixin, register
from gentok.quantizers import FSQ, FSQConfig
from gentok.validate import check_ids


@config
class ItemTokenizerConfig:
    embed_dim: int = 384  # width of the text embedding (all-MiniLM-L6-v2)
    n_chunks: int = 3  # tokens per item before the suffix: short ids keep decoding cheap
    levels: tuple[int, ...] = (8, 6, 5)  # FSQ levels per token: 240 codes
    hidden: int = 256  # per-chunk encoder/decoder MLP width
    max_suffix: int = 256  # most items allowed to share the same chunk codes (an under-trained tokenizer collides a lot)
    num_items: int = 0  # rows of the frozen table (set by build_table / add_items)

    def __post_init__(self):
        if self.embed_dim < 1 or self.n_chunks < 1 or self.embed_dim % self.n_chunks:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be a positive multiple of n_chunks ({self.n_chunks})")
        if self.max_suffix < 1 or self.hidden < 1 or self.num_items < 0:
            raise ValueError("max_suffix and hidden must be >= 1 and num_items >= 0")
        FSQConfig(dim=len(self.levels), levels=self.levels)  # validates the levels

    @classmethod
    def tiny(cls, embed_dim: int = 24):
        return cls(embed_dim=embed_dim, n_chunks=3, levels=(4, 3), hidden=32, max_suffix=16)


@dataclass
class ItemTokenizerOutput:
    recon: Tensor  # (b, embed_dim)
    codes: Tensor  # (b, n_chunks)
    loss: Tensor
    metrics: dict = field(default_factory=dict)


@register("recsys.item_tokens")
class ItemTokenizer(PretrainedMixin, nn.Module):
    config_class = ItemTokenizerConfig

    def __init__(self, config: ItemTokenizerConfig):
        super().__init__()
        self.config = config
        c, q = config.embed_dim // config.n_chunks, len(config.levels)
        self.encoders = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(c), nn.Linear(c, config.hidden), nn.GELU(), nn.Linear(config.hidden, q))
            for _ in range(config.n_chunks)
        )
        self.fsq = FSQ(FSQConfig(dim=q, levels=config.levels))
        self.decoders = nn.ModuleList(
            nn.Sequential(nn.Linear(q, config.hidden), nn.GELU(), nn.Linear(config.hidden, c))
            for _ in range(config.n_chunks)
        )
        self.register_buffer("codes", torch.zeros(config.num_items, config.n_chunks + 1, dtype=torch.long))

    # -- sizes ---------------------------------------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return self.fsq.codebook_size

    @property
    def code_length(self) -> int:
        return self.config.n_chunks + 1

    @property
    def vocab_sizes(self) -> list[int]:
        """Vocabulary of each position of an item's code sequence (chunk codes, then the suffix)."""
        return [self.codebook_size] * self.config.n_chunks + [self.config.max_suffix]

    @property
    def num_items(self) -> int:
        return self.codes.shape[0]

    # -- autoencoder -------------------------------------------------------------------------------------------
    def _check(self, emb: Tensor) -> None:
        if not isinstance(emb, Tensor) or not emb.dtype.is_floating_point or emb.ndim != 2 \
                or emb.shape[1] != self.config.embed_dim:
            raise ValueError(f"expected float embeddings (b, {self.config.embed_dim}), got "
                             f"{getattr(emb, 'dtype', type(emb))} {tuple(getattr(emb, 'shape', ()))}")
        if not torch.isfinite(emb).all():
            raise ValueError("item embeddings contain NaN or infinite values")

    def chunks(self, emb: Tensor) -> Tensor:
        """(b, embed_dim) -> (b, n_chunks, embed_dim / n_chunks)."""
        return rearrange(emb, "b (n c) -> b n c", n=self.config.n_chunks)

    def _latent(self, emb: Tensor) -> Tensor:
        parts = self.chunks(emb)
        return torch.stack([enc(parts[:, i]) for i, enc in enumerate(self.encoders)], 1)  # (b, n_chunks, q)

    def forward(self, emb: Tensor) -> ItemTokenizerOutput:
        """Reconstruct `emb` (b, embed_dim) through the FSQ bottleneck; loss = MSE + (1 - cosine)."""
        self._check(emb)
        q = self.fsq(self._latent(emb))
        recon = rearrange(torch.stack([dec(q.quantized[:, i]) for i, dec in enumerate(self.decoders)], 1),
                          "b n c -> b (n c)")
        mse = F.mse_loss(recon, emb) * emb.shape[1]  # per-vector squared error, comparable to the cosine term
        cos = 1 - F.cosine_similarity(recon, emb, dim=-1).mean()
        return ItemTokenizerOutput(recon, q.indices, mse + cos, {"cosine": 1 - cos.detach(), **q.metrics})

    @torch.no_grad()
    def encode(self, emb: Tensor) -> Tensor:
        """Chunk codes (b, n_chunks) of embeddings (b, embed_dim), without the suffix."""
        self._check(emb)
        return self.fsq.encode(self._latent(emb))

    # -- the frozen table --------------------------------------------------------------------------------------
    @torch.no_grad()
    def build_table(self, emb: Tensor, batch_size: int = 8192) -> dict:
        """Freeze the item -> codes table from all item embeddings (N, embed_dim); returns `table_stats()`."""
        self._check(emb)
        was = self.training
        self.eval()
        codes = torch.cat([self.encode(emb[s: s + batch_size]) for s in range(0, len(emb), batch_size)]) \
            if len(emb) else torch.zeros(0, self.config.n_chunks, dtype=torch.long)
        self.train(was)
        self.codes = torch.zeros(0, self.code_length, dtype=torch.long)
        self.config = replace(self.config, num_items=0)
        self._append(codes)
        return self.table_stats()

    @torch.no_grad()
    def add_items(self, emb: Tensor) -> Tensor:
        """Append new items from their embeddings alone; returns their new item indices (m,)."""
        start = self.num_items
        self._append(self.encode(emb))
        return torch.arange(start, self.num_items)

    def keep_items(self, rows: Tensor) -> None:
        """Keep the table rows of items `rows` (m,) distinct indices, in that order: codes stay unique and new items
        are appended after them as usual."""
        rows = check_ids(torch.as_tensor(rows), self.num_items, shape=(None,), what="items to keep")
        if len(torch.unique(rows)) != len(rows):
            raise ValueError("items to keep must be distinct")
        self.codes = self.codes[rows.to(self.codes.device)]
        self.config = replace(self.config, num_items=self.codes.shape[0])

    def _append(self, prefix: Tensor) -> None:
        """Give each new prefix the next free suffix among items already sharing it (catalog order)."""
        old = self.codes
        allp = torch.cat([old[:, :-1], prefix])
        _, group = torch.unique(allp, dim=0, return_inverse=True)
        n_old = old.shape[0]
        counts = torch.bincount(group[:n_old], minlength=int(group.max()) + 1 if len(group) else 0)
        suffix = torch.empty(len(prefix), dtype=torch.long)
        new_groups = group[n_old:]
        # rank of each new item within its group, in order: stable sort by group then count equal predecessors
        order = torch.sort(new_groups, stable=True).indices
        sorted_g = new_groups[order]
        first = torch.searchsorted(sorted_g, sorted_g, right=False)
        rank_in_group = torch.arange(len(sorted_g)) - first
        suffix[order] = counts[sorted_g] + rank_in_group if len(sorted_g) else rank_in_group
        if len(suffix) and int(suffix.max()) >= self.config.max_suffix:
            raise ValueError(
                f"{int(suffix.max()) + 1} items share the same codes, more than max_suffix={self.config.max_suffix}; "
                "use more FSQ levels or chunks, or raise max_suffix"
            )
        self.codes = torch.cat([old, torch.cat([prefix, suffix[:, None]], 1)]).to(old.device)
        self.config = replace(self.config, num_items=self.codes.shape[0])

    def table_stats(self) -> dict:
        """Codebook usage per chunk position, and how many items collide on their chunk codes."""
        codes = self.codes
        n = codes.shape[0]
        if n == 0:
            return {"items": 0}
        usage = [int(torch.unique(codes[:, i]).numel()) / self.codebook_size for i in range(self.config.n_chunks)]
        unique_prefixes = torch.unique(codes[:, :-1], dim=0).shape[0]
        return {
            "items": n,
            "codebook_usage": usage,
            "unique_prefixes": int(unique_prefixes),
            "collision_rate": 1.0 - unique_prefixes / n,  # fraction of items that needed a non-zero suffix
            "max_suffix_used": int(codes[:, -1].max()),
            "unique_codes": int(torch.unique(codes, dim=0).shape[0]) == n,
        }
