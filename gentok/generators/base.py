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

# KVCache lives in gentok.generators.cache; it is part of this contract
__all__ = ["Generator", "KVCache", "NullClassMixin", "check_class_conditional", "check_generator"]


class Generator(PretrainedMixin, nn.Module, metaclass=abc.ABCMeta):
    """Base class of all generators; see the module docstring. Every generator's config names its `vocab_size` and
    `seq_len`; a family whose sizes come from elsewhere overrides the two properties."""

    @property
    def vocab_size(self) -> int:
        """Number of distinct token ids the model predicts."""
        return self.config.vocab_size

    @property
    def seq_len(self) -> int:
        """Longest token sequence the model handles."""
        return self.config.seq_len

    @abc.abstractmethod
    def forward(self, ids: Tensor, *args, **kwargs) -> Tensor:
        """Token ids (b, n) (+ family-specific layout) -> logits (b, q, vocab_size)."""


def check_class_conditional(config) -> None:
    """The size checks of a class-conditional transformer config (RAR, MaskGIT): a `ValueError` naming the sizes."""
    c = config
    if c.vocab_size < 2 or c.seq_len < 1 or c.num_classes < 1:
        raise ValueError(f"need vocab_size >= 2, seq_len >= 1, num_classes >= 1; got {c.vocab_size}, {c.seq_len}, "
                         f"{c.num_classes}")
    if c.depth < 1 or c.mlp_dim < 1 or c.heads < 1 or c.dim % c.heads:
        raise ValueError(f"need depth, mlp_dim >= 1 and dim divisible by heads; got depth {c.depth}, "
                         f"mlp_dim {c.mlp_dim}, dim {c.dim}, heads {c.heads}")


class NullClassMixin:
    """A class-conditional generator trained with class dropout (RAR, TiTok's MaskGIT models): its config's
    `num_classes` classes, and the "no class" id `null_class` == num_classes that classifier-free guidance feeds."""

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def null_class(self) -> int:
        """The "no class" id (the unconditional rows of classifier-free guidance)."""
        return self.config.num_classes


def check_generator(model, role: str = "model") -> Generator:
    """`model` itself when it is a `Generator`; else a `ValueError` naming what was passed and what is needed (a
    sampler's first check: a tokenizer handed to `generate` would otherwise fail deep inside with an AttributeError)."""
    if isinstance(model, Generator):
        return model
    name = type(model).__name__
    if hasattr(model, "encode") and hasattr(model, "decode"):
        raise ValueError(f"{role} is a {name} tokenizer, not a generator: sampling needs a sequence model over its "
                         "tokens (e.g. an ARTransformer or ASARM trained by recipes/generator.py, or "
                         "gentok.load(<generator dir>)); the tokenizer then decodes the sampled ids")
    raise ValueError(f"{role} must be a gentok generator (ARTransformer, ASARM, ...), got {name}")
