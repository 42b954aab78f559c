"""Lookup-free quantization (MAGVIT-v2, Yu et al. 2023) over vector-quantize-pytorch's `LFQ`.

Each of log2(codebook_size) channels is quantized to its sign; an entropy loss spreads usage over the codebook.
"""

from __future__ import annotations

import math

from torch import Tensor
from vector_quantize_pytorch import LFQ as _LFQ

from gentok.checkpoint import register
from gentok.config import config
from gentok.quantizers.base import Quantizer, QuantizerConfig


@config
class LFQConfig(QuantizerConfig):
    dim: int = 10  # projected to log2(codebook_size) channels when different
    codebook_size: int = 1024  # must be a power of two
    entropy_loss_weight: float = 0.1
    commitment_weight: float = 0.25

    def __post_init__(self):
        if self.codebook_size < 2 or self.codebook_size & (self.codebook_size - 1):
            raise ValueError(f"LFQ codebook_size must be a power of two >= 2, got {self.codebook_size}")
        if self.codebook_size > 2**62:
            raise ValueError("LFQ codebook_size must be at most 2**62 so indices fit in int64")


@register("quantizer.lfq")
class LFQ(Quantizer):
    config_class = LFQConfig

    def __init__(self, config: LFQConfig):
        super().__init__(config)
        self.lfq = _LFQ(
            dim=config.dim,
            codebook_size=config.codebook_size,
            entropy_loss_weight=config.entropy_loss_weight,
            commitment_loss_weight=config.commitment_weight,
        )

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def bits(self) -> int:
        return int(math.log2(self.config.codebook_size))

    def _quantize(self, z: Tensor, mask: Tensor | None):
        quantized, indices, loss = self.lfq(z, mask=mask)
        return quantized, indices.long(), loss

    def _decode(self, indices: Tensor) -> Tensor:
        return self.lfq.indices_to_codes(indices)
