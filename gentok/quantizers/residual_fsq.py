"""Residual FSQ over vector-quantize-pytorch's `ResidualFSQ`: each level an FSQ with a shrinking scale."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from vector_quantize_pytorch import ResidualFSQ as _ResidualFSQ

from gentok.checkpoint import register
from gentok.config import config
from gentok.quantizers.base import QuantizerConfig
from gentok.quantizers.residual import ResidualQuantizer


@config
class ResidualFSQConfig(QuantizerConfig):
    dim: int = 64
    levels: tuple[int, ...] = (8, 5, 5, 5)
    num_quantizers: int = 4
    quantize_dropout: bool = False

    def __post_init__(self):
        if not self.levels or any(int(l) < 2 for l in self.levels) or self.num_quantizers < 1:
            raise ValueError(f"ResidualFSQConfig needs levels >= 2 and num_quantizers >= 1, got {self}")


@register("quantizer.residual_fsq")
class ResidualFSQ(ResidualQuantizer):
    config_class = ResidualFSQConfig

    def __init__(self, config: ResidualFSQConfig):
        super().__init__(config)
        self.rfsq = _ResidualFSQ(
            dim=config.dim,
            levels=list(config.levels),
            num_quantizers=config.num_quantizers,
            quantize_dropout=config.quantize_dropout and config.num_quantizers > 1,
        )

    @property
    def codebook_size(self) -> int:
        return math.prod(self.config.levels)

    def _residual(self, z: Tensor, mask: Tensor | None):
        quantized, indices = self.rfsq(z)
        return quantized, indices, torch.zeros((), device=z.device)

    def _output_from_indices(self, indices: Tensor) -> Tensor:
        return self.rfsq.get_output_from_indices(indices)
