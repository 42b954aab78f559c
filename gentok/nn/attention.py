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
    pair is returned through `self.last_kv` only when `return_kv=True`.
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
                kv: tuple[Tensor, Tensor] | None = None, return_kv: bool = False):
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        if kv is not None:
            k = torch.cat([kv[0], k], dim=2)
            v = torch.cat([kv[1], v], dim=2)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
            dropout_p=self.dropout if self.training else 0.0,
        )
        out = self.proj(rearrange(out, "b h n d -> b n (h d)"))
        return (out, (k, v)) if return_kv else out
