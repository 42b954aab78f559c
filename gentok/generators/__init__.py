"""Sequence models over token ids: autoregressive (`ARTransformer`, `RAR`), any-subset autoregressive (`ASARM`) and
masked (`MaskGITBert`, `MaskGITUViT`). They return logits only; sampling lives in `gentok.sampling`."""

from gentok.generators.ar import ARConfig, ARTransformer, ar_loss
from gentok.generators.asarm import ASARM, ASARMConfig, ASARMLoss, attention_mask, random_ranks
from gentok.generators.base import Generator, KVCache
from gentok.generators.maskgit import MaskGITBert, MaskGITConfig, MaskGITUViT
from gentok.generators.rar import RAR, RARConfig
from gentok.generators.trunk import GeneratorConfig, TransformerGenerator

__all__ = ["ARConfig", "ARTransformer", "ar_loss", "ASARM", "ASARMConfig", "ASARMLoss", "attention_mask",
           "random_ranks", "Generator", "GeneratorConfig", "KVCache", "TransformerGenerator", "MaskGITBert",
           "MaskGITConfig", "MaskGITUViT", "RAR", "RARConfig"]
