"""Residual VQ over vector-quantize-pytorch's `ResidualVQ` (the audio-codec quantizer: EnCodec, DAC, Mimi).

Training runs through the library; eval repeats its residual loop with the chunked exact search of `search.py` at
every level (same indices, no (n x codebook) distance matrix)."""

from __future__ import annotations

import torch
from torch import Tensor
from vector_quantize_pytorch import ResidualVQ as _ResidualVQ

from gentok.checkpoint import register
from gentok.config import config
from gentok.quantizers.base import QuantizerConfig, enable_ddp_codebook_sync
from gentok.quantizers.residual import ResidualQuantizer
from gentok.quantizers.search import lookup
from gentok.quantizers.vq import codebook_kwargs


@config
class ResidualVQConfig(QuantizerConfig):
    dim: int = 64
    num_quantizers: int = 8
    codebook_size: int = 1024  # 10 bits per level, as in EnCodec / DAC
    codebook_dim: int | None = None  # DAC uses 8-dim factorised codes
    cosine: bool = False
    kmeans_init: bool = True
    decay: float = 0.99
    dead_code_threshold: float = 2.0
    commitment_weight: float = 0.25
    quantize_dropout: bool = False  # train with a random number of levels so every prefix decodes well

    def __post_init__(self):
        if self.num_quantizers < 1 or self.codebook_size < 2 or self.dim < 1:
            raise ValueError("ResidualVQConfig needs num_quantizers >= 1, codebook_size >= 2, dim >= 1")


@register("quantizer.residual_vq")
class ResidualVQ(ResidualQuantizer):
    config_class = ResidualVQConfig

    def __init__(self, config: ResidualVQConfig):
        super().__init__(config)
        self.rvq = _ResidualVQ(**codebook_kwargs(config), num_quantizers=config.num_quantizers,
                               quantize_dropout=config.quantize_dropout and config.num_quantizers > 1)

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def _residual(self, z: Tensor, mask: Tensor | None):
        if self.training:
            enable_ddp_codebook_sync(self)
            return self.rvq(z, mask=mask)
        for layer in self.rvq.layers:
            if not bool(layer._codebook.initted):
                layer._codebook.initted.fill_(True)
        return self._eval_residual(z)

    def _eval_residual(self, z: Tensor):
        """The library's eval forward, level by level, in the same float operations (loss is 0 in eval); masked
        positions need no care: they never touch valid ones, and the base class overwrites them."""
        x = self.rvq.project_in(z)
        residual, quantized_out, levels = x, torch.zeros_like(x), []
        for layer in self.rvq.layers:
            indices = lookup(layer, residual, self.config.cosine)
            quantized = layer.get_output_from_indices(indices)
            residual = residual - quantized
            quantized_out = quantized_out + quantized
            levels.append(indices)
        return self.rvq.project_out(quantized_out), torch.stack(levels, -1), z.new_zeros(self.num_codebooks)

    def _output_from_indices(self, indices: Tensor) -> Tensor:
        return self.rvq.get_output_from_indices(indices)
