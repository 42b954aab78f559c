"""Checks of user-supplied integer ids, shared by quantizers, tokenizers, generators and recommenders.

One function so every layer rejects the same bad input with the same kind of message: not a tensor, a float or bool
dtype, the wrong rank or trailing shape, values outside the vocabulary (optionally allowing a padding value).
"""

from __future__ import annotations

import torch
from torch import Tensor

PAD_ID = -1  # "no token": padding past an item's length, a dropped residual level


def check_ids(ids, vocab_size: int, shape: tuple | None = None, what: str = "ids", pad: int | None = None) -> Tensor:
    """Return `ids` as int64 after checking it, or raise `ValueError` naming the problem.

    Args:
        ids: an integer tensor.
        vocab_size: valid ids lie in [0, vocab_size).
        shape: the expected shape, `None` for any size of that dimension (e.g. `(None, 32)` for (b, 32)); the
            rank is checked too. `None` skips the shape check.
        what: how the message names the tensor.
        pad: an extra value allowed anywhere (e.g. `PAD_ID` for padding); `None` allows none.
    """
    if not isinstance(ids, Tensor):
        raise ValueError(f"expected {what} as a torch tensor, got {type(ids).__name__}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
        raise ValueError(f"expected integer {what}, got dtype {ids.dtype}")
    if shape is not None:
        ok = ids.ndim == len(shape) and all(s is None or s == n for s, n in zip(shape, ids.shape))
        if not ok:
            want = ", ".join("b" if i == 0 and s is None else ("*" if s is None else str(s)) for i, s in enumerate(shape))
            raise ValueError(f"expected {what} of shape ({want}), got {tuple(ids.shape)}")
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if pad is not None and (lo < 0 or hi >= vocab_size):
            real = ids[ids != pad]
            lo, hi = (int(real.min()), int(real.max())) if real.numel() else (0, 0)
        if lo < 0 or hi >= vocab_size:
            extra = f" (or {pad} for padding)" if pad is not None else ""
            raise ValueError(f"{what} must lie in [0, {vocab_size}){extra}, got range [{lo}, {hi}]")
    return ids.long()
