"""Pre-norm transformer blocks shared by every model (ViT encoders/decoders, generators, recommenders)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gentok.nn.attention import Attention


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Block(nn.Module):
    """x + attn(norm(x)); x + mlp(norm(x)). Optional adaLN modulation from a conditioning vector `c` (b, cond_dim):
    shift/scale/gate per sub-layer, zero-initialised so a new block starts as the identity (DiT)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0, cond_dim: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=cond_dim is None)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=cond_dim is None)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout)
        self.ada = None
        if cond_dim is not None:
            self.ada = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 6 * dim))
            nn.init.zeros_(self.ada[1].weight)
            nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: Tensor, mask: Tensor | None = None, c: Tensor | None = None, is_causal: bool = False,
                kv: tuple[Tensor, Tensor] | None = None, return_kv: bool = False, keep_last: int | None = None):
        """`keep_last=m`: compute the last m rows only, (b, m, d) (see `Attention`)."""
        rows = slice(None) if keep_last is None else slice(-keep_last, None)
        if self.ada is None:  # plain pre-norm block: no identity scale/shift arithmetic on the hot path
            attn = self.attn(self.norm1(x), mask=mask, is_causal=is_causal, kv=kv, return_kv=return_kv,
                             keep_last=keep_last)
            if return_kv:
                attn, new_kv = attn
            x = x[:, rows] + attn
            x = x + self.mlp(self.norm2(x))
            return (x, new_kv) if return_kv else x
        if c is None:
            raise ValueError("this block is conditioned (adaLN): pass c of shape (b, cond_dim)")
        s1, b1, g1, s2, b2, g2 = self.ada(c)[:, None].chunk(6, dim=-1)
        attn = self.attn(self.norm1(x) * (1 + s1) + b1, mask=mask, is_causal=is_causal, kv=kv, return_kv=return_kv,
                         keep_last=keep_last)
        if return_kv:
            attn, new_kv = attn
        x = x[:, rows] + g1 * attn
        x = x + g2 * self.mlp(self.norm2(x) * (1 + s2) + b2)
        return (x, new_kv) if return_kv else x


class Transformer(nn.Module):
    """A stack of `Block`s with a final LayerNorm.

    `forward(x (b, n, d), ..., keep_last=None) -> (b, n, d)`, or (b, keep_last, d) for the last `keep_last` rows only:
    for callers that read only trailing tokens (TiTok/FlexTok encoders keep their latents), the last block then
    computes queries, MLP and final norm for those rows alone (all earlier blocks must still run on every row)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 cond_dim: int | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout, cond_dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor | None = None, c: Tensor | None = None, is_causal: bool = False,
                keep_last: int | None = None) -> Tensor:
        if keep_last is not None and not 1 <= keep_last <= x.shape[1]:
            raise ValueError(f"keep_last must be in [1, {x.shape[1]}], got {keep_last}")
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, mask=mask, c=c, is_causal=is_causal, keep_last=keep_last if i == last else None)
        if keep_last is not None and not self.blocks:
            x = x[:, -keep_last:]
        return self.norm(x)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Truncated-normal init for linear/embedding weights, zeros for biases (ViT / GPT-2 convention)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(m.weight, std=std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def sincos_positions(n: int, dim: int, base: float = 10000.0) -> Tensor:
    """(n, dim) fixed sinusoidal position table."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(-torch.log(torch.tensor(base)) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table
