"""1D binary image latents (Instella-T2I, AMD 2025): a TiTok-style 1D tokenizer whose tokens are bit vectors.

The encoder/decoder are TiTok's (a ViT reading patches plus K latent tokens; a ViT decoding K latents plus one mask
token per patch); the quantizer is the Bernoulli/STE bit quantizer (`gentok.quantizers.binary`) or, through the
config, the LFQ sign quantizer. Tokens are exposed as what they are: `encode` returns bits (b, K, B) uint8, and
`bits_per_sample` is exactly K * B. Token files store the bits packed eight to a byte.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from gentok.config import config
from gentok.hub import register
from gentok.metrics import CodebookStats, psnr
from gentok.quantizers import BinaryConfig, LFQConfig
from gentok.quantizers.binary import MAX_PACKED_BITS, pack_bits, unpack_bits
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


def pack_bytes(bits: Tensor) -> Tensor:
    """(..., B) 0/1 bits -> (..., ceil(B / 8)) uint8, eight bits to a byte (MSB first); lossless for any B."""
    arr = np.packbits(bits.detach().cpu().numpy().astype(np.uint8), axis=-1)
    return torch.from_numpy(arr)


def unpack_bytes(packed: Tensor, bits: int) -> Tensor:
    """Inverse of `pack_bytes`: (..., ceil(bits / 8)) uint8 -> (..., bits) uint8."""
    if packed.dtype != torch.uint8 or packed.shape[-1] != (bits + 7) // 8:
        raise ValueError(f"expected packed bits as uint8 (..., {(bits + 7) // 8}), got {packed.dtype} "
                         f"{tuple(packed.shape)}")
    return torch.from_numpy(np.unpackbits(packed.numpy(), axis=-1, count=bits))


@register("binary_tokenizer")
class BinaryTokenizer(TiTok):
    """Images (b, 3, S, S) in [0, 1] <-> bits (b, K, B). `forward` (training) is TiTok's, with ids = packed bits."""

    config_class = BinaryTokenizerConfig

    @property
    def bits(self) -> int:
        return self.config.bits

    @property
    def vocab_size(self) -> int:
        return 2**self.bits

    @property
    def bits_per_sample(self) -> float:
        return float(self.config.num_tokens * self.bits)

    @torch.no_grad()
    def encode(self, images) -> Tensor:
        """Images (tensor, PIL images or paths) -> bits (b, K, B) uint8."""
        return unpack_bits(super().encode(images), self.bits)

    def encode_ids(self, images) -> Tensor:
        """Images -> the bits packed into int64 ids (b, K) (B <= 62), for models over integer tokens."""
        return super().encode(images)

    @torch.no_grad()
    def decode(self, tokens: Tensor) -> Tensor:
        """Bits (b, K, B) (bool or integer 0/1) or packed ids (b, K) -> images (b, 3, S, S) in [0, 1]."""
        return super().decode(self._to_ids(tokens))

    def _to_ids(self, tokens: Tensor) -> Tensor:
        c = self.config
        if not isinstance(tokens, Tensor):
            raise ValueError(f"expected bits as a torch tensor, got {type(tokens).__name__}")
        if tokens.ndim == 2:
            return self.check_ids(tokens, (c.num_tokens,))
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != (c.num_tokens, self.bits):
            raise ValueError(f"expected bits of shape (b, {c.num_tokens}, {self.bits}) or ids (b, {c.num_tokens}), "
                             f"got {tuple(tokens.shape)}")
        return pack_bits(tokens)  # validates dtype and 0/1 values

    # -- files: bits packed eight to a byte ----------------------------------------------------------------------
    def encode_files(self, paths: list[str | os.PathLike]) -> dict[str, Tensor]:
        return {"packed_bits": pack_bytes(self.encode(self.read_assets(paths)))}

    def decode_to_files(self, tensors: dict[str, Tensor], out_dir, names):
        if "packed_bits" in tensors:
            tokens = unpack_bytes(tensors["packed_bits"], self.bits)
        elif "bits" in tensors:
            tokens = tensors["bits"]
        elif "ids" in tensors:
            tokens = tensors["ids"]
        else:
            raise ValueError(f"token file has none of 'packed_bits', 'bits', 'ids' (found {sorted(tensors)})")
        return self.write_assets(self.decode(tokens), out_dir, names)


def bit_usage(bits: Tensor) -> dict:
    """Per-bit utilisation of bits (b, K, B): for bit tokens this, not the share of the 2**B patterns hit, says
    whether the rate is used. Each bit's entropy in bits (1 = on for half the tokens, 0 = constant), pooled over
    tokens and per token position (a bit can be balanced over the sequence yet fixed at every position)."""
    def h(p: Tensor) -> Tensor:
        p = p.clamp(1e-9, 1 - 1e-9)
        return -(p * p.log2() + (1 - p) * (1 - p).log2())

    f = bits.float()
    pooled = h(f.mean((0, 1)))  # (B,)
    per_position = h(f.mean(0))  # (K, B)
    return {"bit_ones": float(f.mean()), "bit_entropy_mean": float(pooled.mean()),
            "bit_entropy_min": float(pooled.min()), "bits_used": float((pooled > 0.5).float().mean()),
            "bit_entropy_per_position": float(per_position.mean()), "bit_entropy": [float(v) for v in pooled]}


def binary_eval_fn(model: BinaryTokenizer, loader: DataLoader) -> dict:
    """`fit` eval hook: held-out PSNR, per-bit utilisation (see `bit_usage`), and packed-code usage when B <= 20."""
    total_psnr, n, all_bits = 0.0, 0, []
    stats = CodebookStats(model.vocab_size) if model.bits <= 20 else None
    with torch.no_grad():
        for batch in loader:
            bits = model.encode(batch)
            recon = model.decode(bits)
            total_psnr += float(psnr(recon, batch).sum())
            all_bits.append(bits)
            if stats is not None:
                stats.update(pack_bits(bits))
            n += len(batch)
    usage = bit_usage(torch.cat(all_bits))
    usage.pop("bit_entropy")  # the per-bit list goes to eval.json, not the scalar log
    out = {"psnr": total_psnr / max(n, 1), **usage}
    if stats is not None:
        out.update({f"code_{k}": v for k, v in stats.compute().items()})
    return out


__all__ = ["BinaryTokenizer", "BinaryTokenizerConfig", "PRESETS", "pack_bytes", "unpack_bytes", "binary_eval_fn",
           "bit_usage", "MAX_PACKED_BITS"]
