"""Finite scalar quantization (Mentzer et al. 2023) over vector-quantize-pytorch's `FSQ`.

Each of `len(levels)` channels is bounded and rounded to `levels[i]` values; the implicit codebook is their product.
No codebook to learn, no auxiliary loss, near-full usage by construction.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from vector_quantize_pytorch import FSQ as _FSQ

from gentok.checkpoint import register
from gentok.config import config
from gentok.quantizers.base import Quantizer, QuantizerConfig


@config
class FSQConfig(QuantizerConfig):
    dim: int = 4  # projected to len(levels) channels when different
    levels: tuple[int, ...] = (8, 5, 5, 5)  # 1000 codes: the paper's recommendation for ~2^10
    # weight of a penalty on bound inputs beyond +-saturation_limit (tanh(2) = 0.96: every level is reachable
    # inside). FSQ's tanh bound has a vanishing gradient when saturated, and Adam's normalised steps drive a weakly
    # supervised encoder there within tens of steps; saturated channels then only take their two extreme levels
    saturation_weight: float = 0.0
    saturation_limit: float = 2.0

    def __post_init__(self):
        if not self.levels or any(int(l) < 2 for l in self.levels):
            raise ValueError(f"FSQ levels must all be >= 2, got {self.levels}")
        if self.saturation_weight < 0 or self.saturation_limit <= 0:
            raise ValueError("saturation_weight must be >= 0 and saturation_limit > 0")
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")


@register("quantizer.fsq")
class FSQ(Quantizer):
    config_class = FSQConfig

    def __init__(self, config: FSQConfig):
        super().__init__(config)
        self.fsq = _FSQ(levels=list(config.levels), dim=config.dim)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.config.levels)

    def _quantize(self, z: Tensor, mask: Tensor | None):
        quantized, indices = self.fsq(z)
        loss = torch.zeros((), device=z.device)
        if self.config.saturation_weight > 0 and self.training:
            pre = self.fsq.project_in(z)
            if mask is not None:
                pre = pre[mask]
            excess = (pre.abs() - self.config.saturation_limit).clamp_min(0)
            loss = self.config.saturation_weight * excess.square().mean()
        return quantized, indices.long(), loss

    def _decode(self, indices: Tensor) -> Tensor:
        return self.fsq.indices_to_codes(indices)
