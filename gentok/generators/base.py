"""The generator contract: a sequence model over token ids that returns logits, never samples.

`forward(ids, ...) -> logits (b, q, vocab)`; what the `...` and the q rows mean is each family's documented layout
(next-token rows for the autoregressive model, addressed query rows for the any-subset model). Incremental decoding
goes through an explicit `KVCache` object (`gentok.generators.cache`: static, preallocated, per-row lengths) that
the caller owns, so a sampler can fork, crop (roll back rejected speculative tokens) or drop it. Sampling algorithms
live in `gentok.sampling` and take the model as an argument. Input ids are checked with `gentok.validate.check_ids`,
the one id check every layer shares. The transformer both
generators are built on (config fields, embeddings, head) is `gentok.generators.trunk`.

Class conditioning is passed the same way to every generator: the keyword `cond`, a LongTensor (b,) of class ids in
[0, num_classes), also accepted as the second positional argument of `forward` (and of `decode`, the cached step).
Generators trained with class dropout for classifier-free guidance (RAR, TiTok's MaskGIT models) also accept
`cond == num_classes`, their "no class" id, exposed as the property `null_class`; the model maps it to its own
unconditional embedding, so samplers never need to know how a family stores it. A class-conditional generator
exposes `num_classes`; an unconditional one takes `cond=None`.
"""

from __future__ import annotations

import abc

from torch import Tensor, nn

from gentok.checkpoint import PretrainedMixin
from gentok.generators.cache import KVCache

__all__ = ["Generator", "KVCache"]  # KVCache lives in gentok.generators.cache; it is part of this contract


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
