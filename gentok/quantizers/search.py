"""Exact nearest-code search that never holds more than one chunk of the (vectors x codes) distance matrix.

vector-quantize-pytorch scores every input against every code at once: an (n, c) distance matrix, then an (n, c)
one-hot, both far larger than the cache once n and c reach thousands, so its eval lookup is bound by memory traffic.
Here rows go through in chunks of at most `max_elements / c` vectors, each chunk's distances stay in cache, and only
the (n,) winners leave it.

Exactness: the indices are the library's, tie for tie. Its Euclidean distance is `cdist` written as
`sqrt(clamp(||x||^2 + ||c||^2 - 2 x.c, 1e-8))` (the square root and the clamp can turn nearly equal squared distances
into equal ones, and the first of equal ones wins), its cosine score is the plain dot product of the l2-normalised
input with the (already normalised) codes, and both pick the first best code. We evaluate the same expressions in the
same order — only the row range per call changes, which leaves every element's arithmetic as it was.

`VectorQuantize` layers are searched through `lookup` (projection in, l2-normalisation for cosine codes, search),
which mirrors the library's eval forward for the plain single-head layers gentok builds. Training still runs through
the library: its EMA, k-means and dead-code updates consume the full one-hot it builds, so the search is used in eval.
"""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_MAX_ELEMENTS = 1 << 22  # 16 MiB of float32 distances: few chunks (small matmuls stall threads), bounded memory
_CDIST_EPS = 1e-8  # vector-quantize-pytorch's `cdist` clamps squared distances here before the square root


def row_chunks(n: int, codes: int, max_elements: int = DEFAULT_MAX_ELEMENTS) -> list[tuple[int, int]]:
    """(start, end) row ranges covering `n` rows such that rows x `codes` <= max_elements (at least one row)."""
    if max_elements < 1:
        raise ValueError(f"max_elements must be >= 1, got {max_elements}")
    step = max(1, max_elements // max(codes, 1))
    return [(s, min(s + step, n)) for s in range(0, n, step)]


def nearest_codes(x: Tensor, codes: Tensor, cosine: bool = False,
                  max_elements: int = DEFAULT_MAX_ELEMENTS) -> Tensor:
    """Index of the best code for every row, as vector-quantize-pytorch picks it.

    Args:
        x: (n, d) float vectors (for `cosine`, already l2-normalised, as the library's `transform_input` leaves them).
        codes: (c, d) code vectors of the same dtype.
        cosine: score by dot product (largest wins) instead of Euclidean distance (smallest wins).
        max_elements: most distances computed at once; rows are processed in chunks of `max_elements // c`.
    Returns:
        (n,) long indices into `codes`; the first best code on ties.
    """
    if x.ndim != 2 or codes.ndim != 2 or x.shape[1] != codes.shape[1]:
        raise ValueError(f"expected x (n, d) and codes (c, d), got {tuple(x.shape)} and {tuple(codes.shape)}")
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    codes_t = codes.t()
    # the library's y2 = reduce(y ** 2, 'b n d -> b n', 'sum'), computed once instead of once per call
    sq_codes = None if cosine else codes.pow(2).sum(-1)
    for s, e in row_chunks(x.shape[0], codes.shape[0], max_elements):
        xc = x[s:e]
        if cosine:
            torch.argmax(xc @ codes_t, dim=-1, out=out[s:e])
            continue
        dist = xc.pow(2).sum(-1, keepdim=True) + sq_codes  # (x2 + y2) first, as the library adds them
        dist += (xc @ codes_t).mul_(-2)  # ... then the cross term, scaled by -2 (exact) before the sum
        # the library takes argmax of -sqrt(clamp(.)); negation is exact, so argmin of the same values agrees
        torch.argmin(dist.clamp_(min=_CDIST_EPS).sqrt_(), dim=-1, out=out[s:e])
    return out


def lookup(vq, x: Tensor, cosine: bool, max_elements: int = DEFAULT_MAX_ELEMENTS) -> Tensor:
    """Indices a single-head vector-quantize-pytorch `VectorQuantize` assigns to `x` (..., dim) in eval mode.

    Applies the layer's input projection and, for cosine codes, its l2-normalisation (the library's own
    `transform_input`), then `nearest_codes` against `vq.codebook`. Returns (...) long indices."""
    book = vq._codebook
    if vq.heads != 1 or getattr(book, "affine_param", False) or getattr(book, "vq_bridge", None) is not None:
        raise ValueError("the chunked code search mirrors plain single-head VectorQuantize layers only")
    h = book.transform_input(vq.project_in(x))
    codes = vq.codebook.to(h.dtype)
    flat = h.reshape(-1, h.shape[-1])
    return nearest_codes(flat, codes, cosine=cosine, max_elements=max_elements).view(h.shape[:-1])
