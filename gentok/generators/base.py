"""The generator contract: a sequence model over token ids that returns logits, never samples.

`forward(ids, ...) -> logits (b, q, vocab)`; what the `...` and the q rows mean is each family's documented layout
(next-token rows for the autoregressive model, addressed query rows for the any-subset model). Incremental decoding
goes through an explicit `KVCache` object that the caller owns, so a sampler can fork, crop (roll back rejected
speculative tokens) or drop it. Sampling algorithms live in `gentok.sampling` and take the model as an argument.
Input ids are checked with `gentok.validate.check_ids`, the one id check every layer shares. The transformer both
generators are built on (config fields, embeddings, head) is `gentok.generators.trunk`.
"""

from __future__ import annotations

import abc

from torch import Tensor, nn

from gentok.hub import PretrainedMixin


class KVCache:
    """Keys and values of every layer for the positions processed so far: `layers[i] = (k, v)`, each
    (b, heads, length, d_head). Owned by the caller; a model's `forward(..., cache=c)` appends to it in place."""

    def __init__(self, num_layers: int):
        self.layers: list[tuple[Tensor, Tensor] | None] = [None] * num_layers

    @property
    def length(self) -> int:
        """Number of positions cached."""
        first = self.layers[0]
        return 0 if first is None else first[0].shape[2]

    def crop(self, length: int) -> None:
        """Keep only the first `length` positions (drop rejected speculative tokens)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot crop a cache of length {self.length} to {length}")
        self.layers = [None if kv is None or length == 0 else (kv[0][:, :, :length], kv[1][:, :, :length])
                       for kv in self.layers]

    def select(self, rows: Tensor) -> "KVCache":
        """A new cache holding only batch rows `rows` (a 1-d index tensor)."""
        out = KVCache(len(self.layers))
        out.layers = [None if kv is None else (kv[0][rows], kv[1][rows]) for kv in self.layers]
        return out


class Generator(PretrainedMixin, nn.Module, metaclass=abc.ABCMeta):
    """Base class of all generators; see the module docstring."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct token ids the model predicts."""

    @property
    @abc.abstractmethod
    def seq_len(self) -> int:
        """Longest token sequence the model handles."""

    @abc.abstractmethod
    def forward(self, ids: Tensor, *args, **kwargs) -> Tensor:
        """Token ids (b, n) (+ family-specific layout) -> logits (b, q, vocab_size)."""
