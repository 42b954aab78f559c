"""Vector quantization (VQ-VAE, van den Oord et al. 2017) over vector-quantize-pytorch's `VectorQuantize`.

Defaults follow TiTok: l2-normalised (cosine) codes, k-means initialisation, EMA codebook updates and dead-code
restarts; `codebook_dim` smaller than `dim` gives the low-dimensional factorised lookup of ViT-VQGAN.

Training runs through the library (its EMA / k-means / dead-code updates); eval looks codes up with the chunked exact
search of `search.py`, which gives the library's indices without its (n x codebook) distance and one-hot matrices.
"""

from __future__ import annotations

import torch
from torch import Tensor
from vector_quantize_pytorch import VectorQuantize

from gentok.checkpoint import register
from gentok.config import config
from gentok.quantizers.base import Quantizer, QuantizerConfig, enable_ddp_codebook_sync
from gentok.quantizers.search import lookup


@config
class VQConfig(QuantizerConfig):
    dim: int = 12
    codebook_size: int = 4096  # TiTok default
    codebook_dim: int | None = None  # < dim: look codes up in a projected low-dim space (factorised codes)
    cosine: bool = True  # l2-normalised codes and inputs: better usage, as in TiTok / ViT-VQGAN
    kmeans_init: bool = True  # initialise codes from the first training batch
    kmeans_iters: int = 10
    ema: bool = True  # EMA codebook updates; False learns the codebook by gradient (codebook loss)
    decay: float = 0.99  # EMA decay
    # restart codes whose EMA count (hits per batch) falls below this; 0 disables. Keep it well under the average
    # hits per code per batch (vectors per batch / codebook_size), or live codes get restarted every step
    dead_code_threshold: float = 0.1
    commitment_weight: float = 0.25

    def __post_init__(self):
        if self.dim < 1 or self.codebook_size < 2:
            raise ValueError(f"VQConfig needs dim >= 1 and codebook_size >= 2, got {self.dim}, {self.codebook_size}")
        if self.codebook_dim is not None and self.codebook_dim < 1:
            raise ValueError(f"codebook_dim must be >= 1, got {self.codebook_dim}")
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1), got {self.decay}")


def codebook_kwargs(config) -> dict:
    """The arguments of vector-quantize-pytorch's codebook that `VQConfig` and `ResidualVQConfig` share."""
    return dict(
        dim=config.dim,
        codebook_size=config.codebook_size,
        codebook_dim=config.codebook_dim,
        use_cosine_sim=config.cosine,
        kmeans_init=config.kmeans_init,
        decay=config.decay,
        threshold_ema_dead_code=config.dead_code_threshold,
        commitment_weight=config.commitment_weight,
        rotation_trick=False,  # keep the straight-through gradient the identity (contract)
        sync_codebook=False,  # switched on lazily once a process group exists (enable_ddp_codebook_sync)
    )


@register("quantizer.vq")
class VQ(Quantizer):
    config_class = VQConfig

    def __init__(self, config: VQConfig):
        super().__init__(config)
        self.vq = VectorQuantize(**codebook_kwargs(config), kmeans_iters=config.kmeans_iters, ema_update=config.ema,
                                 learnable_codebook=not config.ema)

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def codebook(self) -> Tensor:
        """(codebook_size, codebook_dim) code vectors."""
        return self.vq.codebook

    def _quantize(self, z: Tensor, mask: Tensor | None):
        if self.training:
            enable_ddp_codebook_sync(self)
        elif not bool(self.vq._codebook.initted):
            # k-means needs a training batch (and, under DDP, every rank); eval before training uses the random init
            self.vq._codebook.initted.fill_(True)
        if not self.training:  # the library's eval forward, without its full distance matrix (loss is 0 in eval)
            indices = lookup(self.vq, z, self.config.cosine)
            return self.vq.get_output_from_indices(indices), indices, z.new_zeros(())
        quantized, indices, loss = self.vq(z, mask=mask)
        if not self.config.ema and self.training:
            # learnable codebook: pull codes toward their (detached) inputs
            codes = self.vq.get_codes_from_indices(indices)
            target = self.vq.project_in(z).detach()
            if self.config.cosine:
                target = torch.nn.functional.normalize(target, dim=-1)
            err = (codes - target).pow(2).mean(-1)
            loss = loss + (err[mask].mean() if mask is not None else err.mean())
        return quantized, indices, loss.sum()

    def _decode(self, indices: Tensor) -> Tensor:
        return self.vq.get_output_from_indices(indices)
