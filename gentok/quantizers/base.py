"""The quantizer contract shared by every tokenizer in gentok.

`forward(z: (b, n, d), mask=None) -> QuantizerOutput(quantized, indices, loss, metrics)`; `encode(z) -> indices`;
`decode(indices) -> quantized`; `codebook_size`, `num_codebooks`, `bits_per_token`. In eval mode
`decode(encode(z)) == forward(z).quantized`. The math runs in float32 whatever autocast is active. `metrics` always
carries `usage` (fraction of codes hit by this call), `perplexity` (of the code histogram) and `dead_fraction`
(codes not hit during the last `DEAD_WINDOW` training calls).

Subclasses implement `_quantize(z, mask)`, `_decode(indices)` and the two size properties; the base class owns input
checks, the float32 island, masking and the metrics, so every quantizer behaves the same at its edges.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gentok.checkpoint import PretrainedMixin
from gentok.config import config
from gentok.validate import PAD_ID, check_ids

DEAD_WINDOW = 32  # training calls a code may go unused before it counts as dead
_MAX_TRACKED_CODES = 1 << 20  # per-code usage buffers above this size would cost more than they tell


@config
class QuantizerConfig:
    """Base of all quantizer configs; `dim` is the width of the vectors fed to the quantizer."""

    dim: int = 12


@dataclass
class QuantizerOutput:
    quantized: Tensor  # (b, n, d), straight-through: gradient w.r.t. the input is the identity
    indices: Tensor  # (b, n) long, or (b, n, q) for residual quantizers; PAD_ID (-1) where masked or a level dropped
    loss: Tensor  # scalar auxiliary loss (commitment / entropy), already weighted
    metrics: dict[str, Tensor] = field(default_factory=dict)


def registered_quantizers() -> dict[type, type]:
    """config class -> quantizer class, for every quantizer type registered with `gentok.checkpoint.register`
    (`gentok.quantizers` imports them all; a quantizer of another package counts once its module is imported)."""
    from gentok.checkpoint import loaded_models

    return {cls.config_class: cls for cls in loaded_models().values()
            if isinstance(cls, type) and issubclass(cls, Quantizer) and cls.config_class is not QuantizerConfig}


def build_quantizer(cfg: QuantizerConfig) -> "Quantizer":
    """Instantiate the quantizer a config describes (the registered class whose `config_class` is its type)."""
    known = registered_quantizers()
    cls = known.get(type(cfg))
    if cls is None:
        raise ValueError(f"no quantizer registered for {type(cfg).__name__}; known: "
                         f"{sorted(c.__name__ for c in known)}")
    return cls(cfg)


def code_statistics(indices: Tensor, codebook_size: int) -> tuple[Tensor, Tensor]:
    """Usage (fraction of codes hit) and perplexity of a flat tensor of indices (negatives are ignored)."""
    indices = indices.reshape(-1)
    indices = indices[indices >= 0]
    if indices.numel() == 0:
        zero = torch.zeros((), device=indices.device)
        return zero, zero
    if codebook_size <= _MAX_TRACKED_CODES:
        counts = torch.bincount(indices, minlength=codebook_size).float()
        counts = counts[counts > 0]
    else:
        counts = torch.unique(indices, return_counts=True)[1].float()
    p = counts / counts.sum()
    entropy = -(p * p.log()).sum()
    return counts.numel() / codebook_size * torch.ones((), device=indices.device), entropy.exp()


class Quantizer(PretrainedMixin, nn.Module, metaclass=abc.ABCMeta):
    """Base class: see the module docstring for the contract."""

    config_class = QuantizerConfig

    def __init__(self, config: QuantizerConfig):
        super().__init__()
        self.config = config
        # per level: the training-call counter at which each code was last used (for dead-code metrics)
        levels = self.num_codebooks
        tracked = self.codebook_size if self.codebook_size <= _MAX_TRACKED_CODES else 0
        self.register_buffer("_last_used", torch.zeros(levels, tracked, dtype=torch.long), persistent=False)
        self.register_buffer("_calls", torch.zeros((), dtype=torch.long), persistent=False)

    # -- what subclasses provide -------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def codebook_size(self) -> int:
        """Number of codes per level."""

    @property
    def num_codebooks(self) -> int:
        """Number of index levels per token (1, or q for residual quantizers)."""
        return 1

    @abc.abstractmethod
    def _quantize(self, z: Tensor, mask: Tensor | None, **kwargs) -> tuple[Tensor, Tensor, Tensor]:
        """float32 z (b, n, d) -> (quantized (b, n, d), indices, loss)."""

    @abc.abstractmethod
    def _decode(self, indices: Tensor) -> Tensor:
        """Long indices -> float32 quantized vectors (b, n, d)."""

    # -- the contract -------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def bits_per_token(self) -> float:
        return self.num_codebooks * math.log2(self.codebook_size)

    def forward(self, z: Tensor, mask: Tensor | None = None, **kwargs) -> QuantizerOutput:
        """Quantize `z` (b, n, d). `mask` (b, n) bool marks valid positions; masked ones come back as zeros,
        never update a codebook, and never change the outputs or loss at valid positions."""
        self._check_input(z, mask)
        with torch.autocast(device_type=z.device.type, enabled=False):
            quantized, indices, loss = self._quantize(z.float(), mask, **kwargs)
        if mask is not None:
            quantized = quantized.masked_fill(~mask[..., None], 0.0)
            fill = torch.zeros((), dtype=indices.dtype, device=indices.device)
            indices = torch.where(mask.reshape(mask.shape + (1,) * (indices.ndim - 2)), indices, fill + PAD_ID)
        metrics = self._metrics(indices)
        return QuantizerOutput(quantized.to(z.dtype), indices.long(), loss.float().reshape(()), metrics)

    @torch.no_grad()
    def encode(self, z: Tensor, mask: Tensor | None = None, **kwargs) -> Tensor:
        """Indices of `z` (b, n, d), computed in eval mode (no codebook update)."""
        was_training = self.training
        self.eval()
        try:
            return self.forward(z, mask, **kwargs).indices
        finally:
            self.train(was_training)

    def decode(self, indices: Tensor) -> Tensor:
        """Quantized vectors (b, n, d) for `indices` of the shape `encode` returns."""
        q = self.num_codebooks
        if q == 1:
            indices = check_ids(indices, self.codebook_size, (None, None), "indices")
        else:  # (b, n, q' <= q): a prefix of the levels; a dropped level is PAD_ID
            indices = check_ids(indices, self.codebook_size, (None, None, None), "indices", pad=PAD_ID)
            if indices.shape[-1] > q:
                raise ValueError(f"expected indices of shape (b, n, q<={q}), got {tuple(indices.shape)}")
        with torch.autocast(device_type=indices.device.type, enabled=False):
            return self._decode(indices).float()

    # -- shared helpers -----------------------------------------------------------------------------------------
    def _check_input(self, z: Tensor, mask: Tensor | None) -> None:
        if not isinstance(z, Tensor) or not z.dtype.is_floating_point:
            raise ValueError(f"expected a float tensor (b, n, {self.dim}), got {getattr(z, 'dtype', type(z))}")
        if z.ndim != 3 or z.shape[-1] != self.dim:
            raise ValueError(f"expected input of shape (b, n, {self.dim}), got {tuple(z.shape)}")
        if not torch.isfinite(z).all():
            raise ValueError("quantizer input contains NaN or infinite values")
        if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != tuple(z.shape[:2])):
            raise ValueError(f"expected a bool mask of shape {tuple(z.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")

    @torch.no_grad()
    def _metrics(self, indices: Tensor) -> dict[str, Tensor]:
        levels = indices.reshape(-1, self.num_codebooks)
        usage, perplexity = zip(*(code_statistics(levels[:, i], self.codebook_size) for i in range(self.num_codebooks)))
        usage = torch.stack(usage).mean()
        perplexity = torch.stack(perplexity).mean()
        if self._last_used.shape[1] and self.training:
            self._calls += 1
            for i in range(self.num_codebooks):
                hit = levels[:, i]
                hit = hit[hit >= 0]
                self._last_used[i, hit] = self._calls
        if self._last_used.shape[1] and self._calls > 0:
            window = min(DEAD_WINDOW, int(self._calls))
            dead = (self._calls - self._last_used >= window).float().mean()
        else:
            dead = 1.0 - usage
        return {"usage": usage, "perplexity": perplexity, "dead_fraction": dead}


def enable_ddp_codebook_sync(module: nn.Module) -> None:
    """Make vector-quantize-pytorch codebooks inside `module` synchronise across processes.

    The library decides at construction whether to all-reduce codebook statistics, but gentok models are built
    before accelerate starts the process group; this switches the sync on once the group exists.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    from vector_quantize_pytorch.vector_quantize_pytorch import sample_vectors_distributed

    for m in module.modules():
        if hasattr(m, "all_reduce_fn") and hasattr(m, "kmeans_all_reduce_fn") and not getattr(m, "use_ddp", True):
            m.use_ddp = True
            m.all_reduce_fn = dist.all_reduce
            m.kmeans_all_reduce_fn = dist.all_reduce
            m.sample_fn = sample_vectors_distributed
            m.replace_sample_fn = sample_vectors_distributed
