"""The MaskGIT-VQGAN pixel decoder (Chang et al. 2022) behind the official TiTok l32/b64/s128 weights.

Those TiTok models do not predict pixels: their ViT decoder predicts, per patch, logits over the 1024 codes of a
frozen MaskGIT-VQGAN ("proxy codes"); the softmax-weighted code vectors form a (b, z, g, g) map that the VQGAN's
convolutional decoder turns into RGB in [0, 1]. `ProxyCodeHead` is that path; its parameter names follow the
official checkpoint (`conv_in`, `mid.i`, `up.i.block.j`, `up.i.upsample_conv`, `norm_out`, `conv_out`) so weights
map one to one. This module holds only the decoder half: TiTok never runs the VQGAN encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gentok.config import config


@config
class MaskGitVQGANConfig:
    channels: tuple[int, ...] = (128, 128, 256, 256, 512)  # per resolution level, finest first (2x upsample between)
    num_res_blocks: int = 2  # residual blocks per level and in the middle
    z_channels: int = 256  # width of a proxy code vector
    codebook_size: int = 1024  # proxy codes the ViT decoder predicts logits over

    def __post_init__(self):
        if not self.channels or any(c < 1 or c % 32 for c in self.channels):
            raise ValueError(f"channels must be positive multiples of 32 (GroupNorm with 32 groups), got {self.channels}")
        if self.num_res_blocks < 1 or self.z_channels < 1 or self.codebook_size < 2:
            raise ValueError("num_res_blocks and z_channels must be >= 1, codebook_size >= 2")

    @property
    def upsample(self) -> int:
        """Output pixels per input position along each side."""
        return 2 ** (len(self.channels) - 1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class ResBlock(nn.Module):
    """norm-silu-conv twice, plus a shortcut.

    When the width changes, the published weights were trained with the 1x1 shortcut applied to the block's *output*
    (`h + shortcut(h)`), not to its input; it is kept that way, since the weights only work with it."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = _norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.norm2 = _norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(c_out, c_out, 1, bias=False) if c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x if self.nin_shortcut is None else self.nin_shortcut(h))


class UpBlock(nn.Module):
    """`num_res_blocks` residual blocks, then (except at the finest level) 2x nearest upsampling and a 3x3 conv."""

    def __init__(self, c_in: int, c_out: int, num_res_blocks: int, upsample: bool):
        super().__init__()
        self.block = nn.ModuleList(ResBlock(c_in if i == 0 else c_out, c_out) for i in range(num_res_blocks))
        self.upsample_conv = nn.Conv2d(c_out, c_out, 3, padding=1) if upsample else None

    def forward(self, x: Tensor) -> Tensor:
        for block in self.block:
            x = block(x)
        if self.upsample_conv is not None:
            x = self.upsample_conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class MaskGitVQGANDecoder(nn.Module):
    """`forward(z (b, z_channels, g, g)) -> images (b, 3, g * upsample, g * upsample)`."""

    def __init__(self, c: MaskGitVQGANConfig):
        super().__init__()
        ch = c.channels
        self.conv_in = nn.Conv2d(c.z_channels, ch[-1], 3, padding=1)
        self.mid = nn.ModuleList(ResBlock(ch[-1], ch[-1]) for _ in range(c.num_res_blocks))
        # up[i] works at level i (finest = 0) and is run coarsest first
        self.up = nn.ModuleList(UpBlock(ch[min(i + 1, len(ch) - 1)], ch[i], c.num_res_blocks, upsample=i > 0)
                                for i in range(len(ch)))
        self.norm_out = _norm(ch[0])
        self.conv_out = nn.Conv2d(ch[0], 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for block in reversed(self.up):
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class ProxyCodeHead(nn.Module):
    """`forward(h (b, g*g, width)) -> images (b, 3, S, S)` in [0, 1] (unclamped).

    A 1x1 MLP (width -> 2 width, tanh) predicts logits over the proxy codebook per patch; their softmax mixes the code
    vectors into a (b, z, g, g) map for `MaskGitVQGANDecoder`."""

    def __init__(self, width: int, c: MaskGitVQGANConfig):
        super().__init__()
        self.ffn = nn.Sequential(nn.Linear(width, 2 * width), nn.Tanh(), nn.Linear(2 * width, c.codebook_size))
        self.codebook = nn.Parameter(torch.randn(c.codebook_size, c.z_channels) / c.codebook_size)
        self.pixel_decoder = MaskGitVQGANDecoder(c)

    def logits(self, h: Tensor) -> Tensor:
        """(b, g*g, width) -> (b, g*g, codebook_size) proxy-code logits."""
        return self.ffn(h)

    def forward(self, h: Tensor) -> Tensor:
        b, n, _ = h.shape
        g = int(round(n**0.5))
        if g * g != n:
            raise ValueError(f"expected a square grid of patches, got {n}")
        z = self.logits(h).softmax(-1) @ self.codebook  # (b, g*g, z)
        return self.pixel_decoder(z.transpose(1, 2).reshape(b, -1, g, g))
