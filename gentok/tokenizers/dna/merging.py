"""Token merging for MergeDNA: ToMe-style bipartite soft matching restricted to adjacent tokens.

Tokens alternate between two sets (even positions: A, odd positions: B). Every A token scores its left and right
neighbours (cosine similarity of keys), the `r` best-scoring A tokens are folded into their chosen B neighbour with a
size-weighted average, and the remaining tokens keep their order. Because an A token only ever joins an immediate
neighbour, every group is a contiguous span of bases; because rows are windows, no group crosses a window. A source
matrix (rows: tokens, columns: bases, 0/1) records which bases each token covers; merging sums its rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_PAD_BONUS = 4.0  # cosine similarities lie in [-1, 1]: padding prefers padding, and never joins a real base


def bipartite_merge(x: Tensor, keys: Tensor, sizes: Tensor, source: Tensor, r: int,
                    real: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Merge `r` tokens of every row into an adjacent token.

    Args:
        x: (B, t, d) token features; keys: (B, t, k) what similarity is measured on.
        sizes: (B, t) float, bases per token; source: (B, t, m) float 0/1, bases (columns) each token covers, or
            any per-token counts that add up when tokens merge (e.g. (B, t, 1) real bases per token).
        r: tokens removed per row, 0 <= r <= t // 2.
        real: optional (B, t) float, fraction of a token's bases that are real (not padding).
    Returns:
        (x (B, t - r, d) size-weighted means, sizes (B, t - r), source (B, t - r, m)).
    """
    B, t, d = x.shape
    if r == 0:
        return x, sizes, source
    if not 0 < r <= t // 2:
        raise ValueError(f"cannot remove {r} of {t} tokens in one bipartite step (at most {t // 2})")
    kn = F.normalize(keys.float(), dim=-1)
    sim = (kn[:, :-1] * kn[:, 1:]).sum(-1)  # (B, t-1): similarity of token i with token i+1
    if real is not None:
        pad = real < 0.5
        both_pad = pad[:, :-1] & pad[:, 1:]
        mixed = pad[:, :-1] ^ pad[:, 1:]
        sim = sim + _PAD_BONUS * both_pad.float() - _PAD_BONUS * mixed.float()
    a = torch.arange(0, t, 2, device=x.device)  # A positions
    neg = torch.full((B, 1), -math.inf, device=x.device)
    left = torch.cat([neg, sim], 1)[:, a]  # A at position p vs p - 1 (none for p = 0)
    right = torch.cat([sim, neg], 1)[:, a]  # vs p + 1 (none for the last position)
    go_left = left > right
    best = torch.where(go_left, left, right)
    chosen = best.argsort(dim=-1, descending=True, stable=True)[:, :r]  # (B, r) indices into A
    src = a[chosen]  # (B, r) positions leaving
    dst = torch.where(go_left.gather(1, chosen), src - 1, src + 1)  # their B neighbours

    w = sizes.to(x.dtype)[..., None]
    weighted = x * w
    total = weighted.scatter_add(1, dst[..., None].expand(-1, -1, d),
                                 weighted.gather(1, src[..., None].expand(-1, -1, d)))
    new_sizes = sizes.scatter_add(1, dst, sizes.gather(1, src))
    m = source.shape[-1]
    new_source = source.scatter_add(1, dst[..., None].expand(-1, -1, m),
                                    source.gather(1, src[..., None].expand(-1, -1, m)))
    keep = torch.ones(B, t, dtype=torch.bool, device=x.device)
    keep.scatter_(1, src, False)
    kept = keep.nonzero()[:, 1].view(B, t - r)  # surviving positions, in order: one index for all three gathers
    new_sizes = new_sizes.gather(1, kept)
    out = total.gather(1, kept[..., None].expand(-1, -1, d)) / new_sizes.to(x.dtype)[..., None]
    return out, new_sizes, new_source.gather(1, kept[..., None].expand(-1, -1, m))


def min_tokens(window: int, layers: int) -> int:
    """Fewest tokens `layers` bipartite steps can leave from `window` (each keeps at least half)."""
    n = window
    for _ in range(layers):
        n -= n // 2
    return n


def merge_schedule(window: int, tokens: int, layers: int) -> list[int]:
    """Tokens removed per layer to go from `window` to `tokens`, spread as evenly as each step allows."""
    if not min_tokens(window, layers) <= tokens <= window:
        raise ValueError(f"{layers} merge layers can bring a window of {window} to between "
                         f"{min_tokens(window, layers)} and {window} tokens, not {tokens}")
    out, cur = [], window
    for left in range(layers, 0, -1):
        need = cur - tokens
        r = min(cur // 2, -(-need // left))
        while need - r > cur - r - min_tokens(cur - r, left - 1):  # later layers could not finish: merge more now
            r += 1
        out.append(r)
        cur -= r
    return out


def global_merge(x: Tensor, keys: Tensor, sizes: Tensor, source: Tensor, target: int):
    """Bipartite steps over whole rows (no windows) until `target` tokens remain; returns like `bipartite_merge`."""
    dx = x.shape[-1]
    while x.shape[1] > target:
        r = min(x.shape[1] // 2, x.shape[1] - target)
        # keys are averaged like the features, so the next step scores the merged tokens
        both, sizes, source = bipartite_merge(torch.cat([x, keys], -1), keys, sizes, source, r)
        x, keys = both[..., :dx], both[..., dx:]
    return x, sizes, source


# -- spans <-> assignments ---------------------------------------------------------------------------------------
def lengths_to_assignment(lengths: Tensor, n: int) -> Tensor:
    """Token lengths (b, L) (zeros past the end) -> (b, n) index of the token covering each base (clamped to L-1)."""
    ends = lengths.cumsum(-1)
    pos = torch.arange(n, device=lengths.device).expand(lengths.shape[0], n).contiguous()
    return torch.searchsorted(ends, pos, right=True).clamp_max(lengths.shape[1] - 1)


def offsets_in_token(lengths: Tensor, assign: Tensor) -> Tensor:
    """(b, n) offset of each base inside its token, from token lengths (b, L) and assignment (b, n)."""
    starts = lengths.cumsum(-1) - lengths
    return torch.arange(assign.shape[1], device=assign.device) - starts.gather(1, assign)


def unmerge(tokens: Tensor, assign: Tensor) -> Tensor:
    """Copy each token's vector back to every base it covers: tokens (b, L, d), assign (b, n) -> (b, n, d).

    Equivalent to `source.T @ tokens` for the 0/1 source matrix, without building it."""
    return tokens.gather(1, assign[..., None].expand(-1, -1, tokens.shape[-1]))


def source_to_dense(source_windows: Tensor, batch: int) -> Tensor:
    """Per-window sources (b * nw, t, W) -> the block-diagonal source matrix (b, nw * t, nw * W)."""
    bw, t, w = source_windows.shape
    nw = bw // batch
    s = source_windows.view(batch, nw, t, w)
    eye = torch.eye(nw, dtype=s.dtype, device=s.device)
    return torch.einsum("bitw,ij->bitjw", s, eye).reshape(batch, nw * t, nw * w)
