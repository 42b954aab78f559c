"""A static key/value cache for incremental decoding: one preallocated buffer per cache, written in place.

Why static: appending by `torch.cat` allocates and copies every layer's whole history at every step, and a fresh
causal mask per step is one more allocation. Here the keys/values of all layers live in two buffers
(layers, b, heads, capacity, d_head) allocated on the first write; a step writes its new rows into them and attends
over a *view* of the filled part. Rolling back rejected speculative tokens (`crop`) only moves the lengths: stale
slots past a row's length are never read again before they are overwritten.

Rows may hold different lengths (speculative and any-subset samplers accept different numbers of tokens per row).
While every row has the same length (plain decoding) a step writes a contiguous slice and needs no mask for a single
new position; with ragged lengths it scatters each row's new keys at its own offset and masks per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Step:
    """Where one forward pass writes: built once per pass by `KVCache.begin`, read by every layer."""

    start: int | None  # uniform lengths: first slot written (a slice); None: ragged (see `slots`)
    width: int  # new positions per row
    span: int  # keys attended: slots [0, span)
    slots: Tensor | None  # ragged: (n, width) slot of each new position per row
    rows: Tensor | None  # ragged: (n,) cache rows this pass covers (None: all)
    mask: Tensor | None  # bool, broadcastable to (n, heads, width, span); True = may attend; None = see everything


class KVCache:
    """Keys and values of every layer for the positions processed so far, owned by the caller; a model's
    `forward(..., cache=c)` writes into it in place.

    Args:
        num_layers: transformer blocks of the model.
        capacity: most positions a row can hold (the model's `new_cache` passes its maximum). Required before the
            first pass; `KVCache(num_layers)` alone is the old call form and fails there with a message.
    """

    def __init__(self, num_layers: int, capacity: int | None = None):
        self.num_layers, self.capacity = num_layers, capacity
        self.k: Tensor | None = None  # (layers, b, heads, capacity, d_head)
        self.v: Tensor | None = None
        self._lengths: list[int] = []  # per row, on the host: every slicing decision is made without a device sync
        self._tri: Tensor | None = None  # (capacity, capacity) causal mask; steps take views of it

    # -- reading --------------------------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return len(self._lengths)

    @property
    def lengths(self) -> list[int]:
        """Positions cached per row (empty before the first pass)."""
        return list(self._lengths)

    @property
    def length(self) -> int:
        """Positions cached (0 before the first pass); rows must agree, else read `lengths`."""
        if not self._lengths:
            return 0
        first = self._lengths[0]
        if any(n != first for n in self._lengths):
            raise ValueError(f"rows hold different lengths {self._lengths}: read .lengths")
        return first

    @property
    def layers(self) -> list[tuple[Tensor, Tensor] | None]:
        """Per layer (k, v) views (b, heads, length, d_head) of the filled part (rows of equal length only)."""
        n = self.length
        if self.k is None or n == 0:
            return [None] * self.num_layers
        return [(self.k[i, :, :, :n], self.v[i, :, :, :n]) for i in range(self.num_layers)]

    # -- rolling back ---------------------------------------------------------------------------------------------
    def crop(self, length: int | Sequence[int] | Tensor) -> None:
        """Keep only the first `length` positions: one int for every row, or one per row (drop rejected tokens)."""
        new = [int(length)] * len(self._lengths) if isinstance(length, int) else [int(n) for n in length]
        if len(new) != len(self._lengths) or any(not 0 <= n <= old for n, old in zip(new, self._lengths)):
            raise ValueError(f"cannot crop a cache of lengths {self._lengths} to {new}")
        self._lengths = new

    def select(self, rows: Tensor) -> KVCache:
        """A new cache holding only batch rows `rows` (a 1-d index tensor), copied."""
        out = KVCache(self.num_layers, self.capacity)
        idx = rows.tolist()
        out._lengths = [self._lengths[i] for i in idx]
        if self.k is not None:
            rows = rows.to(self.k.device)
            out.k, out.v, out._tri = self.k[:, rows], self.v[:, rows], self._tri
        return out

    # -- one forward pass -----------------------------------------------------------------------------------------
    def begin(self, width: int, batch: int, heads: int, head_dim: int, dtype, device, rows: Tensor | None = None,
              causal: bool = True) -> Step:
        """Prepare a pass that adds `width` positions to each of `batch` rows (or to the cache rows `rows`).

        Allocates the buffers on the first pass. With `causal`, new position t of a row sees that row's cached
        positions and new positions <= t; otherwise the caller sets `step.mask` itself (any-subset models).
        """
        if self.k is None:
            if self.capacity is None:
                raise ValueError("this KVCache has no capacity: create it with model.new_cache()")
            shape = (self.num_layers, batch, heads, self.capacity, head_dim)
            # zeros, not empty: a masked-out stale slot still enters attention's matmul with weight 0 (0 * NaN = NaN)
            self.k = torch.zeros(shape, dtype=dtype, device=device)
            self.v = torch.zeros(shape, dtype=dtype, device=device)
            self._tri = torch.ones(self.capacity, self.capacity, dtype=torch.bool, device=device).tril()
            self._lengths = [0] * batch
        elif self.k.shape[1] != len(self._lengths) or self.k.shape[2] != heads or self.k.shape[4] != head_dim:
            raise ValueError(f"cache made for {tuple(self.k.shape[1:])} used with batch {batch}, {heads} heads")
        lengths = self._lengths if rows is None else [self._lengths[i] for i in rows.tolist()]
        if len(lengths) != batch:
            raise ValueError(f"cache holds {len(lengths)} rows, this pass has {batch}")
        if max(lengths) + width > self.capacity:
            raise ValueError(f"{max(lengths)} cached + {width} new positions exceed the cache capacity {self.capacity}")
        if rows is None and all(n == lengths[0] for n in lengths):
            start = lengths[0]
            span = start + width
            mask = self._tri[start:span, :span] if causal and width > 1 else None
            return Step(start, width, span, None, None, mask)
        offsets = torch.tensor(lengths, device=self.k.device)
        slots = offsets[:, None] + torch.arange(width, device=self.k.device)  # (n, width)
        span = max(lengths) + width
        mask = None
        if causal:
            mask = (torch.arange(span, device=self.k.device) <= slots[:, :, None])[:, None]  # (n, 1, width, span)
        if rows is not None:
            rows = rows.to(self.k.device)
        return Step(None, width, span, slots, rows, mask)

    def write(self, layer: int, k: Tensor, v: Tensor, step: Step) -> tuple[Tensor, Tensor]:
        """Store a layer's new keys/values (n, heads, width, d_head); return all keys/values the pass attends to."""
        K, V = self.k[layer], self.v[layer]  # (b, heads, capacity, d_head)
        if step.start is not None:
            K[:, :, step.start:step.start + step.width] = k
            V[:, :, step.start:step.start + step.width] = v
            return K[:, :, :step.span], V[:, :, :step.span]
        rows = torch.arange(k.shape[0], device=k.device) if step.rows is None else step.rows
        # advanced indices around a slice put the indexed dims first: (n, width, heads, d_head)
        K[rows[:, None], :, step.slots] = k.transpose(1, 2)
        V[rows[:, None], :, step.slots] = v.transpose(1, 2)
        if step.rows is None:
            return K[:, :, :step.span], V[:, :, :step.span]
        return K[step.rows, :, :step.span], V[step.rows, :, :step.span]

    def advance(self, step: Step, rows: Sequence[int] | None = None) -> None:
        """Count the pass's positions as cached (call after every layer wrote)."""
        idx = range(len(self._lengths)) if step.rows is None and rows is None else (
            rows if rows is not None else step.rows.tolist())
        for i in idx:
            self._lengths[i] += step.width
