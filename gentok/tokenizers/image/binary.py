"""1D binary image latents (Instella-T2I, AMD 2025): a TiTok-style 1D tokenizer whose tokens are bit vectors.

The encoder/decoder are TiTok's (a ViT reading patches plus K latent tokens; a ViT decoding K latents plus one mask
token per patch); the quantizer is the Bernoulli/STE bit quantizer (`gentok.quantizers.binary`) or, through the
config, the LFQ sign quantizer. `encode` returns `Tokens` like every tokenizer: ids (b, K), each token's B bits packed
MSB-first into one int64 (B <= 62), so `vocab_size` is 2**B and `bits_per_token` exactly B. The bits themselves come
from the explicitly named `encode_bits` (b, K, B) uint8; `to_bits` / `gentok.quantizers.binary.pack_bits` convert.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gentok.checkpoint import register
from gentok.config import config
from gentok.quantizers import BinaryConfig, LFQConfig
from gentok.quantizers.binary import MAX_PACKED_BITS, unpack_bits
from gentok.tokenizers.image.titok import TiTok, TiTokConfig


@config
class BinaryTokenizerConfig(TiTokConfig):
    """TiTok's fields; `quantizer` must be a `BinaryConfig` or an `LFQConfig` (both give B bits per token)."""

    image_size: int = 256
    patch_size: int = 16
    num_tokens: int = 128  # K
    width: int = 768
    enc_depth: int = 12
    dec_depth: int = 12
    heads: int = 12
    quantizer: BinaryConfig | LFQConfig = BinaryConfig(dim=32, bits=32, anneal_steps=20_000)

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.quantizer, (BinaryConfig, LFQConfig)):
            raise ValueError(f"binary tokenizer needs a BinaryConfig or LFQConfig quantizer, got "
                             f"{type(self.quantizer).__name__}")

    @property
    def bits(self) -> int:
        """B: bits per token."""
        q = self.quantizer
        return q.bits if isinstance(q, BinaryConfig) else int(math.log2(q.codebook_size))


# TiTok `tiny`'s architecture (patch 16, token mixing, refiner): the quantizer is the only difference
_TINY = dict(image_size=64, patch_size=16, num_tokens=32, width=128, enc_depth=4, dec_depth=4, heads=4,
             refine_channels=32, token_mixing=True)
PRESETS = {
    # CPU demo: 32 tokens x 10 bits = 320 bits per image, the same budget as TiTok's `tiny` preset
    "tiny": BinaryTokenizerConfig(**_TINY, quantizer=BinaryConfig(dim=10, bits=10, anneal_steps=350,
                                                                  entropy_weight=0.01)),
    "tiny-lfq": BinaryTokenizerConfig(**_TINY, quantizer=LFQConfig(dim=10, codebook_size=2**10)),
    # GPU: 256 px, 128 tokens x 32 bits
    "B-128x32": BinaryTokenizerConfig(),
}


@register("binary_tokenizer")
class BinaryTokenizer(TiTok):
    """Images (b, 3, S, S) in [0, 1] <-> `Tokens` of packed bit ids (b, K); `encode_bits` gives the bits (b, K, B).
    `forward` (training) is TiTok's, with ids = packed bits."""

    config_class = BinaryTokenizerConfig
    has_bits = True  # ids pack B bits each; `to_bits` unpacks them (evaluation reports per-bit utilisation)

    @property
    def bits(self) -> int:
        """B: bits per token."""
        return self.config.bits

    @property
    def vocab_size(self) -> int:
        return 2**self.bits

    @torch.no_grad()
    def encode_bits(self, images) -> Tensor:
        """Images (tensor, PIL images or paths) -> bits (b, K, B) uint8 in {0, 1}."""
        return self.to_bits(self.encode(images))

    def to_bits(self, tokens) -> Tensor:
        """`Tokens` or packed ids (b, K) -> bits (b, K, B) uint8, most significant bit first."""
        return unpack_bits(self.as_tokens(tokens, length=self.config.num_tokens).ids, self.bits)


__all__ = ["BinaryTokenizer", "BinaryTokenizerConfig", "PRESETS", "MAX_PACKED_BITS"]
