"""A decoder-only (GPT-style) transformer over token ids, optionally class-conditional, with an explicit KV cache.

The model reads `[start] + ids`, where `start` is a learned BOS embedding or, with `num_classes > 0`, the embedding
of a class id; a prefix condition is simply a prompt. Row j of the logits is the distribution of token j given the
tokens before it, so `forward(ids)` (b, n) returns n + 1 rows: the last one predicts the next, unseen token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gentok.config import config
from gentok.generators.base import Generator, KVCache, check_ids
from gentok.hub import register
from gentok.nn import Block, init_weights


@config
class ARConfig:
    vocab_size: int = 1024  # TiTok tiny: 1024 codes
    seq_len: int = 32  # tokens per sample (TiTok tiny: 32)
    num_classes: int = 0  # > 0: a class id chooses the start embedding
    dim: int = 256
    depth: int = 6
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0

    def __post_init__(self):
        if self.vocab_size < 2 or self.seq_len < 1:
            raise ValueError(f"vocab_size must be >= 2 and seq_len >= 1, got {self.vocab_size}, {self.seq_len}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.num_classes < 0 or self.depth < 1:
            raise ValueError("num_classes must be >= 0 and depth >= 1")


PRESETS = {
    "tiny": ARConfig(dim=64, depth=2, heads=4),  # tests and smoke runs: trains in seconds
    "small": ARConfig(dim=192, depth=4, heads=6),  # CPU recipe default (~10 min on 2 cores)
    "base": ARConfig(dim=768, depth=12, heads=12),  # GPT-2 small shape, GPU
}


def preset(name: str) -> ARConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown AR preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]


@register("generator.ar")
class ARTransformer(Generator):
    config_class = ARConfig

    def __init__(self, config: ARConfig):
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.dim)
        self.pos_emb = nn.Parameter(torch.zeros(c.seq_len + 1, c.dim))  # +1: the start position
        if c.num_classes:
            self.class_emb = nn.Embedding(c.num_classes, c.dim)
        else:
            self.bos = nn.Parameter(torch.zeros(c.dim))
        self.blocks = nn.ModuleList(Block(c.dim, c.heads, c.mlp_ratio, c.dropout) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.vocab_size, bias=False)
        init_weights(self)
        nn.init.trunc_normal_(self.pos_emb, std=0.02)
        if not c.num_classes:
            nn.init.trunc_normal_(self.bos, std=0.02)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def seq_len(self) -> int:
        return self.config.seq_len

    def new_cache(self) -> KVCache:
        return KVCache(len(self.blocks))

    def forward(self, ids: Tensor, cond: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        """Next-token logits.

        Args:
            ids: (b, n) token ids, n may be 0 on the first call (only the start position is then processed).
            cond: (b,) class ids; required iff `num_classes > 0`, read only when the start position is processed.
            cache: an optional `KVCache`, appended to in place. An empty cache means "start of the sequence".
        Returns:
            logits (b, n + 1, vocab) when the start position is processed (no cache or an empty one), else (b, n,
            vocab); the last row always predicts the token after the last input.
        """
        ids = check_ids(ids, self.config.vocab_size)
        b, n = ids.shape
        past = 0 if cache is None else cache.length
        x = self.tok_emb(ids)
        if past == 0:
            x = torch.cat([self._start(cond, b)[:, None], x], dim=1)
        total = past + x.shape[1]
        if total > self.config.seq_len + 1:
            raise ValueError(f"sequence of {total - 1} tokens exceeds seq_len {self.config.seq_len}")
        x = x + self.pos_emb[past:total]
        m = x.shape[1]
        # a single new position may see every cached one: no mask; otherwise causal, offset by the cache
        mask = None if m == 1 else torch.ones(m, total, dtype=torch.bool, device=x.device).tril(past)
        for i, block in enumerate(self.blocks):
            if cache is None:
                x = block(x, mask=mask)
            else:
                x, cache.layers[i] = block(x, mask=mask, kv=cache.layers[i], return_kv=True)
        return self.head(self.norm(x))

    def _start(self, cond: Tensor | None, b: int) -> Tensor:
        if self.config.num_classes:
            if cond is None:
                raise ValueError(f"this model is class-conditional ({self.config.num_classes} classes): pass cond (b,)")
            cond = torch.as_tensor(cond, device=self.tok_emb.weight.device).long().reshape(-1)
            if cond.shape[0] != b or int(cond.min()) < 0 or int(cond.max()) >= self.config.num_classes:
                raise ValueError(f"cond must be {b} class ids in [0, {self.config.num_classes}), got {cond.tolist()}")
            return self.class_emb(cond)
        return self.bos.expand(b, -1)


def ar_loss(model: nn.Module, batch) -> tuple[Tensor, dict]:
    """Next-token cross entropy; `batch` is ids (b, n) or a pair (ids, class ids)."""
    ids, cond = batch if isinstance(batch, (tuple, list)) else (batch, None)
    logits = model(ids, cond)[:, :-1]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids.reshape(-1))
    return loss, {"nll": loss.detach()}
