"""Binary (Bernoulli) bit quantization, as in the 1D binary latents of Instella-T2I (AMD, 2025).

Each token is projected to B bit-logits z. Training samples bits ~ Bernoulli(sigmoid(z / T)) with a straight-through
estimator, the temperature T annealed linearly to 0 (at T = 0 the sample is the hard threshold, so the end of training
sees exactly what eval sees); eval thresholds sigmoid(z) at 0.5. The auxiliary loss is LFQ's entropy loss written per
bit: the mean binary entropy of sigmoid(z) pushes each token's bit probabilities toward 0 or 1, and one minus the
entropy of each bit's batch-mean probability keeps every bit in use (on for about half the tokens). Without the
second term the first lets bits saturate to constants, whose sigmoid gradient vanishes, so they never come back.
The token embedding is bits times a learned (B, d) matrix.

Indices are the bits packed MSB-first into one integer (B <= 62 so they fit int64); `pack_bits` / `unpack_bits` are
the lossless conversion both ways. vector-quantize-pytorch has no Bernoulli bit quantizer, hence this file; its sign
quantizer (LFQ) is `gentok.quantizers.lfq`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gentok.checkpoint import register
from gentok.config import config
from gentok.quantizers.base import Quantizer, QuantizerConfig
from gentok.validate import check_ids

MAX_PACKED_BITS = 62  # int64 holds 63 value bits; one spare keeps every packed id non-negative with room to spare


def _weights(bits: int, device) -> Tensor:
    return 2 ** torch.arange(bits - 1, -1, -1, device=device, dtype=torch.long)  # MSB first, like LFQ


def pack_bits(bits: Tensor) -> Tensor:
    """(..., B) tensor of 0/1 (bool or integer) -> (...) int64 ids, most significant bit first; needs B <= 62."""
    if isinstance(bits, Tensor) and bits.dtype == torch.bool:
        bits = bits.long()
    bits = check_ids(bits, 2, what="bits (0 or 1)")
    b = bits.shape[-1] if bits.ndim else 0
    if not 1 <= b <= MAX_PACKED_BITS:
        raise ValueError(f"can pack 1..{MAX_PACKED_BITS} bits per token into int64, got {b}")
    return (bits * _weights(b, bits.device)).sum(-1)


def unpack_bits(ids: Tensor, bits: int) -> Tensor:
    """(...) integer ids -> (..., bits) uint8 bits, the inverse of `pack_bits`."""
    if not 1 <= bits <= MAX_PACKED_BITS:
        raise ValueError(f"can unpack 1..{MAX_PACKED_BITS} bits per token, got {bits}")
    ids = check_ids(ids, 2**bits, what=f"packed {bits}-bit ids")
    return ((ids[..., None] // _weights(bits, ids.device)) % 2).to(torch.uint8)


@config
class BinaryConfig(QuantizerConfig):
    dim: int = 16  # width of the vectors in and out; projected to `bits` logits when different
    bits: int = 16  # B: bits per token (codebook of 2**B implicit codes)
    temperature: float = 1.0  # T at the start of training; Bernoulli(sigmoid(z / T))
    anneal_steps: int = 1000  # training forward calls over which T falls linearly to 0 (micro-batches, not steps)
    entropy_weight: float = 0.01  # weight of the mean binary entropy of sigmoid(z): pushes bits toward 0/1
    balance_weight: float = 0.01  # weight of ln 2 - H(batch mean of each bit): every bit stays informative

    def __post_init__(self):
        if not 1 <= self.bits <= MAX_PACKED_BITS:
            raise ValueError(f"bits must lie in [1, {MAX_PACKED_BITS}] so packed ids fit int64, got {self.bits}")
        if self.dim < 1:
            raise ValueError(f"dim must be >= 1, got {self.dim}")
        if min(self.temperature, self.anneal_steps, self.entropy_weight, self.balance_weight) < 0:
            raise ValueError("temperature, anneal_steps, entropy_weight and balance_weight must be >= 0")


@register("quantizer.binary")
class Binary(Quantizer):
    """Bernoulli/STE bit quantizer; see the module docstring. `quantized = bits @ embed` (b, n, dim)."""

    config_class = BinaryConfig

    def __init__(self, config: BinaryConfig):
        super().__init__(config)
        self.to_logits = nn.Linear(config.dim, config.bits) if config.dim != config.bits else nn.Identity()
        # bits in {0,1} -> centred {-1,1} before the matrix, so flipping a bit is a symmetric move in embedding space
        self.embed = nn.Parameter(torch.randn(config.bits, config.dim) * config.bits**-0.5)
        # training forward calls so far: drives the temperature, saved so a resumed run continues the schedule
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @property
    def codebook_size(self) -> int:
        return 2**self.config.bits

    @property
    def bits(self) -> int:
        return self.config.bits

    @property
    def temperature(self) -> float:
        """The sampling temperature of the next training call: T0 * (1 - step / anneal_steps), floored at 0."""
        c = self.config
        if c.anneal_steps == 0:
            return 0.0
        return c.temperature * max(0.0, 1.0 - int(self.step) / c.anneal_steps)

    def logits(self, z: Tensor) -> Tensor:
        """(b, n, dim) -> (b, n, B) bit logits."""
        return self.to_logits(z)

    def embed_bits(self, bits: Tensor) -> Tensor:
        """(b, n, B) 0/1 (any dtype, may carry a straight-through gradient) -> (b, n, dim)."""
        return (bits.float() * 2 - 1) @ self.embed

    def _quantize(self, z: Tensor, mask: Tensor | None):
        logits = self.logits(z)
        p = torch.sigmoid(logits)
        if self.training:
            t = self.temperature
            if t > 0:
                hard = torch.bernoulli(torch.sigmoid(logits / t))
            else:
                hard = (logits > 0).float()
            self.step += 1
        else:
            hard = (logits > 0).float()  # sigmoid(z) > 0.5
        # straight-through: forward value is the hard bit, gradient is that of sigmoid(z) (finite at every T)
        bits = hard + p - p.detach()
        # binary entropy H(sigmoid(z)) per token in nats, written in softplus form to stay finite for large |z|
        entropy = (p * F.softplus(-logits) + (1 - p) * F.softplus(logits)).mean(-1)
        if mask is not None:
            w = mask.to(p.dtype)[..., None]  # (b, n, 1)
            loss = (entropy * mask).sum() / mask.sum().clamp_min(1)
            marginal = (p * w).sum((0, 1)) / w.sum().clamp_min(1)  # (B,) how often each bit is on
        else:
            loss = entropy.mean()
            marginal = p.mean((0, 1))
        marginal = marginal.clamp(1e-6, 1 - 1e-6)
        balance = math.log(2) + (marginal * marginal.log() + (1 - marginal) * (1 - marginal).log()).mean()
        c = self.config
        return self.embed_bits(bits), pack_bits(hard.long()), c.entropy_weight * loss + c.balance_weight * balance

    def _decode(self, indices: Tensor) -> Tensor:
        return self.embed_bits(unpack_bits(indices, self.config.bits))

    @torch.no_grad()
    def encode_bits(self, z: Tensor, mask: Tensor | None = None) -> Tensor:
        """(b, n, dim) -> (b, n, B) uint8 bits (eval thresholding)."""
        return unpack_bits(self.encode(z, mask).clamp_min(0), self.config.bits)

    def decode_bits(self, bits: Tensor) -> Tensor:
        """(b, n, B) 0/1 bits -> quantized vectors (b, n, dim)."""
        return self.decode(pack_bits(bits))
