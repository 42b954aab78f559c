"""Multi-head self-attention over `scaled_dot_product_attention`, with an optional boolean mask and KV cache."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class Attention(nn.Module):
    """`forward(x (b, n, d), mask=None, kv=None) -> (b, n, d)`.

    `mask` is a bool tensor broadcastable to (b, heads, n, n_keys); True means "may attend". `kv` is an optional
    `(k, v)` pair of cached keys/values (b, heads, m, d_head) that the new keys/values are appended to; the updated
    pair is returned (as `(out, (k, v))`) only when `return_kv=True`.

    `keep_last=m` computes the outputs of the last m positions only, (b, m, d): every position still supplies keys
    and values, but queries, the attention rows and the output projection are computed for those m alone (an encoder
    whose caller keeps only its trailing latent tokens skips the rest of its last block). Each output row is the same
    arithmetic as without it, up to float rounding of the differently shaped matmuls.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.dropout = dropout

    def forward(self, x: Tensor, mask: Tensor | None = None, is_causal: bool = False,
                kv: tuple[Tensor, Tensor] | None = None, return_kv: bool = False, keep_last: int | None = None):
        if keep_last is None:
            # one matmul for q, k and v; the rearrange is a strided view SDPA reads directly (no copy)
            q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        else:
            if is_causal:
                raise ValueError("keep_last cannot be combined with is_causal (SDPA aligns a short query block to "
                                 "the first keys): pass an explicit mask")
            q, k, v = self._last_queries(x, keep_last)
            if mask is not None and mask.shape[-2] != 1:
                mask = mask[..., -keep_last:, :]
        if kv is not None:
            k = torch.cat([kv[0], k], dim=2)
            v = torch.cat([kv[1], v], dim=2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
            dropout_p=self.dropout if self.training else 0.0,
        )
        out = self.proj(rearrange(out, "b h n d -> b n (h d)"))
        return (out, (k, v)) if return_kv else out

    def _last_queries(self, x: Tensor, m: int) -> tuple[Tensor, Tensor, Tensor]:
        """q of the last m positions (b, h, m, d_head) and k, v of all (b, h, n, d_head), from row blocks of the packed
        qkv weight (its rows are q | k | v, so these slices are views)."""
        d = x.shape[-1]
        w, b = self.qkv.weight, self.qkv.bias
        q = F.linear(x[:, -m:], w[:d], None if b is None else b[:d])
        k, v = rearrange(F.linear(x, w[d:], None if b is None else b[d:]), "b n (two h d) -> two b h n d", two=2,
                         h=self.heads)
        return rearrange(q, "b n (h d) -> b h n d", h=self.heads), k, v
