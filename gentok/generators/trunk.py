"""The transformer both generators are built on: token + learned position embeddings, pre-norm blocks, a final norm
and a linear head over the vocabulary.

The autoregressive and the any-subset model differ only in what they add around it (a start embedding, a query
embedding) and in their attention masks, so their config fields, embeddings and output head live here once.
Subclasses keep the attribute names `tok_emb`, `pos_emb`, `blocks`, `norm`, `head`: they are the parameter names of
every saved generator checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gentok.config import config
from gentok.generators.base import Generator
from gentok.generators.cache import KVCache, Step
from gentok.nn import Block, init_weights


@config
class GeneratorConfig:
    """Fields every transformer generator has; a family's config subclasses it (and is saved under its own name)."""

    vocab_size: int = 1024  # TiTok tiny: 1024 codes
    seq_len: int = 32  # positions per sample (TiTok tiny: 32 tokens)
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
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")


def pick_preset(presets: dict, name: str, family: str):
    """`presets[name]`, or a `ValueError` listing the choices."""
    if name not in presets:
        raise ValueError(f"unknown {family} preset {name!r}; choose from {sorted(presets)}")
    return presets[name]


class TransformerGenerator(Generator):
    """Embeddings, blocks and head of a generator; subclasses write `forward` (inputs and mask) around them."""

    config_class = GeneratorConfig

    def __init__(self, config: GeneratorConfig, positions: int):
        """`positions`: rows of the position table (the AR model adds one for its start position)."""
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.dim)
        self.pos_emb = nn.Parameter(torch.zeros(positions, c.dim))
        # family embeddings are made before the blocks so a seed gives the same weights as before the trunk existed
        self.add_embeddings(c)
        self.blocks = nn.ModuleList(Block(c.dim, c.heads, c.mlp_ratio, c.dropout) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.vocab_size, bias=False)
        init_weights(self)
        nn.init.trunc_normal_(self.pos_emb, std=0.02)

    def add_embeddings(self, config: GeneratorConfig) -> None:
        """Hook: register the family's own embeddings (initialise plain parameters after `super().__init__`)."""

    def run_blocks(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """(b, m, dim) embeddings -> (b, m, dim) hidden states, no cache (training and reference passes)."""
        for block in self.blocks:
            x = block(x, mask=mask)
        return x

    def new_cache(self, extra: int = 0) -> KVCache:
        """An empty static cache for this model: room for every position (+ `extra` transient slots)."""
        return KVCache(len(self.blocks), self.pos_emb.shape[0] + extra)

    def begin(self, cache: KVCache, x: Tensor, rows: Tensor | None = None, causal: bool = True) -> Step:
        """`cache.begin` for a pass of embeddings x (n, m, dim)."""
        c = self.config
        return cache.begin(x.shape[1], x.shape[0], c.heads, c.dim // c.heads, x.dtype, x.device, rows, causal)

    def cached_blocks(self, x: Tensor, cache: KVCache, step: Step) -> Tensor:
        """(n, m, dim) -> (n, m, dim) through every block, keys/values written into `cache` at `step`.

        The same math as `Block.forward` (tests hold it equal to the uncached pass within 1e-5), written out with
        functional calls because a decoding step is tiny: module calls, the identity adaLN multiplies of the shared
        block, einops pattern parsing and the key/value concatenation cost more than the step's kernels at batch 1.
        """
        n, m, d = x.shape
        heads = self.config.heads
        for i, blk in enumerate(self.blocks):
            a, fc1, fc2 = blk.attn, blk.mlp.net[0], blk.mlp.net[3]
            h = F.layer_norm(x, (d,), blk.norm1.weight, blk.norm1.bias, blk.norm1.eps)
            q, k, v = F.linear(h, a.qkv.weight, a.qkv.bias).view(n, m, 3, heads, -1).permute(2, 0, 3, 1, 4)
            keys, values = cache.write(i, k, v, step)
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=step.mask)
            x = x + F.linear(o.transpose(1, 2).reshape(n, m, d), a.proj.weight, a.proj.bias)
            h = F.layer_norm(x, (d,), blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
            x = x + F.linear(F.gelu(F.linear(h, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
        return x

    def logits(self, x: Tensor) -> Tensor:
        """(b, m, dim) hidden states -> (b, m, vocab) logits."""
        return self.head(self.norm(x))
