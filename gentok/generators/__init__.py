"""Sequence models over token ids: autoregressive (`ARTransformer`) and any-subset autoregressive (`ASARM`).
They return logits only; sampling lives in `gentok.sampling`."""

from gentok.generators.ar import ARConfig, ARTransformer, ar_loss
from gentok.generators.asarm import ASARM, ASARMConfig, ASARMLoss, attention_mask, random_ranks
from gentok.generators.base import Generator, KVCache
from gentok.generators.trunk import GeneratorConfig, TransformerGenerator

__all__ = ["ARConfig", "ARTransformer", "ar_loss", "ASARM", "ASARMConfig", "ASARMLoss", "attention_mask",
           "random_ranks", "Generator", "GeneratorConfig", "KVCache", "TransformerGenerator"]
