"""Shared behaviour of residual quantizers (SoundStream, Zeghidour et al. 2021): q levels, each quantizing the
residual the previous ones left. Indices are (b, n, q); using only the first k levels gives a lower bitrate, and
quantizer dropout during training (handled by the wrapped library class) makes every prefix a usable code."""

from __future__ import annotations

import abc

import torch.nn.functional as F
from torch import Tensor

from gentok.quantizers.base import Quantizer
from gentok.validate import PAD_ID  # -1: also vector-quantize-pytorch's mark of an unused residual level


class ResidualQuantizer(Quantizer):
    """Adds `n_quantizers` to `forward`/`encode`: keep the first k levels, mark the rest PAD_ID."""

    @property
    def num_codebooks(self) -> int:
        return self.config.num_quantizers

    @abc.abstractmethod
    def _residual(self, z: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Full-depth library call: (quantized, indices (b, n, q), loss)."""

    @abc.abstractmethod
    def _output_from_indices(self, indices: Tensor) -> Tensor:
        """Library decode of (b, n, q) indices with PAD_ID (-1) for unused levels."""

    def _quantize(self, z: Tensor, mask: Tensor | None, n_quantizers: int | None = None):
        quantized, indices, loss = self._residual(z, mask)
        # the library sums one straight-through term per level (gradient q x identity); make it exactly the identity
        quantized = z + (quantized - z).detach()
        indices = indices.long()
        if n_quantizers is not None:
            if not 1 <= n_quantizers <= self.num_codebooks:
                raise ValueError(f"n_quantizers must lie in [1, {self.num_codebooks}], got {n_quantizers}")
            if n_quantizers < self.num_codebooks:
                indices = indices.clone()
                indices[..., n_quantizers:] = PAD_ID
                coarse = self._output_from_indices(indices)
                quantized = z + (coarse - z).detach()  # straight-through at the chosen depth
        return quantized, indices, loss.sum()

    def _decode(self, indices: Tensor) -> Tensor:
        q = indices.shape[-1]
        if q < self.num_codebooks:
            indices = F.pad(indices, (0, self.num_codebooks - q), value=PAD_ID)
        return self._output_from_indices(indices)
