"""What a DNA token covers: bases per token, [start, end) spans and bases per sequence, read off `Tokens`.

A MergeDNA id is `code * window + (length - 1)`, so every token carries the number of bases it covers and a
sequence's layout needs no side information. These functions read it from any `Tokens` whose `meta["window"]` is set
(what `MergeDNA.encode` returns) or from bare ids with the window given. They live apart from the model so the
FASTA edge (`assets.py`) and the model (`mergedna.py`) can both use them without importing each other.

"""

from __future__ import annotations

import torch
from torch import Tensor

from gentok.tokenizers.tokens import Tokens
from gentok.validate import PAD_ID


def _window(tokens: Tokens, window: int | None) -> int:
    w = window if window is not None else tokens.meta.get("window")
    if not isinstance(w, int) or isinstance(w, bool) or w < 1:
        raise ValueError(f"DNA tokens need a window (meta['window'] or window=...), got {w!r}")
    return w


def _as_tokens(tokens) -> Tokens:
    if isinstance(tokens, Tokens):
        return tokens
    if isinstance(tokens, Tensor) and tokens.ndim == 2 and not tokens.dtype.is_floating_point:
        return Tokens(tokens, (tokens != PAD_ID).sum(1))
    raise ValueError(f"expected DNA Tokens or ids (b, L), got {getattr(tokens, 'shape', type(tokens).__name__)}")


def base_lengths(tokens: Tokens | Tensor, window: int | None = None) -> Tensor:
    """(b, L) int64: bases each token covers, 0 past each sequence's last token."""
    tokens = _as_tokens(tokens)
    w = _window(tokens, window)
    return torch.where(tokens.mask, tokens.ids % w + 1, torch.zeros_like(tokens.ids))


def base_spans(tokens: Tokens | Tensor, window: int | None = None) -> Tensor:
    """(b, L, 2) int64: the [start, end) bases of each token within its sequence; (-1, -1) past the last token."""
    lengths = base_lengths(tokens, window)
    end = lengths.cumsum(-1)
    spans = torch.stack([end - lengths, end], -1)
    return torch.where((lengths > 0)[..., None], spans, torch.full_like(spans, -1))


def num_bases(tokens: Tokens | Tensor, window: int | None = None) -> Tensor:
    """(b,) int64: bases per sequence (what `decode` returns for each row)."""
    return base_lengths(tokens, window).sum(-1)


def bits_per_base(tokens: Tokens, window: int | None = None) -> Tensor:
    """(b,) float64: bits per base of each sequence, `bits_per_token x tokens / bases`."""
    bases = num_bases(tokens, window)
    return tokens.bits_per_item / bases.clamp_min(1).double()


def from_counts(ids: Tensor, num_tokens: Tensor, window: int) -> Tokens:
    """Ids (b, L) with anything past each row's `num_tokens` (the pre-0.2 layout: zeros) -> `Tokens` with PAD_ID
    there and `meta["window"]`. Ranges are left to the tokenizer's `decode`."""
    if not isinstance(ids, Tensor) or ids.ndim != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"expected integer ids of shape (b, L), got {getattr(ids, 'dtype', type(ids).__name__)} "
                         f"{tuple(getattr(ids, 'shape', ()))}")
    num_tokens = torch.as_tensor(num_tokens)
    if num_tokens.dtype.is_floating_point or num_tokens.shape != (ids.shape[0],):
        raise ValueError(f"num_tokens must be integers of shape ({ids.shape[0]},), got {tuple(num_tokens.shape)}")
    num_tokens = num_tokens.long().to(ids.device)
    valid = torch.arange(ids.shape[1], device=ids.device)[None] < num_tokens[:, None]
    ids = ids.long()
    return Tokens(torch.where(valid, ids, torch.full_like(ids, PAD_ID)), num_tokens, {"window": int(window)})
