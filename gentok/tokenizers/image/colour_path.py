"""Colour tokens: a g x g thumbnail of the image, its cells packed into ids of a tokenizer's own vocabulary.

A learned tokenizer reproduces the colours its training photographs hold; hues they rarely show (green grass, yellow
flowers in a city-and-portrait training set) come back grey or red. A thumbnail does not have that failure: it is
colour-blind by construction. Here the image is area-downsampled to g x g cells, each channel is quantized uniformly
to q bits (every channel alike, so no hue and no channel order is favoured), and a cell's three levels are packed into
one id, r * L^2 + g * L + b with L = 2^q, which fits the vocabulary when 3q <= log2(vocab). A TiTok with
`colour_tokens` appends these g*g ids to its learned ids and decodes residual detail on top of the bilinearly
upsampled thumbnail (`gentok.tokenizers.image.titok`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def colour_bits(vocab_size: int) -> int:
    """q: bits per channel of a colour cell that packs into one id of a `vocab_size` vocabulary (0 if none fits)."""
    return math.floor(math.log2(vocab_size) / 3 + 1e-9) if vocab_size >= 1 else 0


def grid_side(cells: int) -> int:
    """g for `cells` = g * g colour cells; a ValueError when `cells` is not a square."""
    if cells < 1 or math.isqrt(cells) ** 2 != cells:
        raise ValueError(f"colour_tokens must be a square number of cells (1, 4, 9, ...), got {cells}")
    return math.isqrt(cells)


def check_colour_tokens(config) -> None:
    """The checks of a TiTok config with `colour_tokens` > 0; a ValueError naming what does not fit."""
    grid_side(config.colour_tokens)  # a square
    if config.colour_tokens >= config.num_tokens:
        raise ValueError(f"colour_tokens {config.colour_tokens} must leave learned tokens: num_tokens "
                         f"{config.num_tokens} counts both, so it must be larger (or set colour_tokens too; 0 turns "
                         "them off)")
    if config.quantizer is None:
        raise ValueError("colour_tokens need discrete tokens (a quantizer), not a VAE bottleneck")
    if config.proxy_decoder is not None or config.pixel_range != "signed":
        raise ValueError("colour_tokens are for gentok-trained pixel decoders (no proxy_decoder, signed pixels)")


def cell_bits(quantizer) -> int:
    """q of colour cells sharing `quantizer`'s ids (one codebook of at least 8 codes); a ValueError otherwise."""
    if quantizer.num_codebooks != 1:
        raise ValueError(f"colour_tokens need one id per token, got a quantizer with {quantizer.num_codebooks} levels")
    q = colour_bits(quantizer.codebook_size)
    if q < 1:
        raise ValueError(f"colour_tokens pack 3 channels into one id: the codebook needs at least 8 codes "
                         f"(1 bit per channel), got {quantizer.codebook_size}")
    return q


def thumbnail(images: Tensor, g: int, q: int) -> Tensor:
    """Images (b, 3, H, W) in [0, 1] -> quantized thumbnail (b, 3, g, g): area means, each rounded to one of 2^q
    evenly spaced levels in [0, 1] (the equal-bit baseline's quantization)."""
    levels = 2**q - 1
    small = F.interpolate(images.float().clamp(0, 1), size=(g, g), mode="area")
    return (small * levels).round() / levels


def pack(thumb: Tensor, q: int) -> Tensor:
    """Quantized thumbnail (b, 3, g, g) -> ids (b, g*g) in [0, 2^(3q)), cells in raster order."""
    levels = 2**q
    lv = (thumb * (levels - 1)).round().long().clamp(0, levels - 1).flatten(2)  # (b, 3, g*g)
    return (lv[:, 0] * levels + lv[:, 1]) * levels + lv[:, 2]


def unpack(ids: Tensor, q: int) -> Tensor:
    """Ids (b, g*g) -> the quantized thumbnail (b, 3, g, g) they pack (`pack`'s inverse on its range; an id past
    2^(3q), possible in a larger vocabulary, saturates its levels)."""
    levels = 2**q
    g = grid_side(ids.shape[1])
    ids = ids.long()
    lv = torch.stack([ids // (levels * levels), (ids // levels) % levels, ids % levels], 1).clamp(0, levels - 1)
    return (lv.float() / (levels - 1)).reshape(ids.shape[0], 3, g, g)


def upsample(thumb: Tensor, size: int) -> Tensor:
    """Thumbnail (b, 3, g, g) -> (b, 3, size, size), bilinear as the equal-bit baseline upsamples."""
    return F.interpolate(thumb, size=(size, size), mode="bilinear", align_corners=False)
