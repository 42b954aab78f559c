"""The MaskGIT-VQGAN image tokenizer (Chang et al. 2022; the `maskgit-vqgan-imagenet-f16-256` weights that RAR and
TiTok's proxy codes use): a convolutional encoder downsamples the image 2^(levels-1) times to a grid of
`z_channels`-dim vectors, each replaced by its nearest code (plain Euclidean distance), and the convolutional decoder
(`gentok.pretrained.maskgit_vqgan`, shared with TiTok) maps the code grid back to pixels in [0, 1].

Token ids are the grid in raster order (row by row), `(b, g * g)`, so a 256 px image at f16 gives 256 ids over 1024
codes: the sequences RAR generates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gentok.checkpoint import register
from gentok.config import config
from gentok.pretrained.maskgit_vqgan import MaskGitVQGANConfig, MaskGitVQGANDecoder, ResBlock
from gentok.tokenizers.base import Tokenizer, TokenizerOutput
from gentok.tokenizers.image.assets import ImageAssetsMixin, to_image_batch


@config
class VQGANConfig(MaskGitVQGANConfig):
    """The decoder's shape (`MaskGitVQGANConfig`: channels per level, finest first; residual blocks; code width; codes)
    mirrored by the encoder, plus the image size."""

    image_size: int = 256
    commitment_weight: float = 0.25  # training only

    def __post_init__(self):
        super().__post_init__()
        if self.image_size % self.upsample:
            raise ValueError(f"image_size {self.image_size} is not divisible by the {self.upsample}x downsampling")


class DownBlock(nn.Module):
    """`num_res_blocks` residual blocks, then (except at the coarsest level) 2x average pooling."""

    def __init__(self, c_in: int, c_out: int, num_res_blocks: int, downsample: bool):
        super().__init__()
        self.block = nn.ModuleList(ResBlock(c_in if i == 0 else c_out, c_out) for i in range(num_res_blocks))
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        for block in self.block:
            x = block(x)
        return F.avg_pool2d(x, 2) if self.downsample else x


class VQGANEncoder(nn.Module):
    """`forward(images (b, 3, S, S)) -> (b, z_channels, S / upsample, S / upsample)`."""

    def __init__(self, c: VQGANConfig):
        super().__init__()
        ch = c.channels
        self.conv_in = nn.Conv2d(3, ch[0], 3, padding=1, bias=False)
        self.down = nn.ModuleList(DownBlock(ch[max(i - 1, 0)], ch[i], c.num_res_blocks, downsample=i < len(ch) - 1)
                                  for i in range(len(ch)))
        self.mid = nn.ModuleList(ResBlock(ch[-1], ch[-1]) for _ in range(c.num_res_blocks))
        self.norm_out = nn.GroupNorm(32, ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], c.z_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for block in self.down:
            h = block(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


@register("maskgit_vqgan")
class MaskGitVQGAN(ImageAssetsMixin, Tokenizer):
    """`encode(images) -> Tokens` ids (b, g*g); `decode(ids) -> images (b, 3, S, S)` in [0, 1]."""

    config_class = VQGANConfig

    def __init__(self, config: VQGANConfig):
        super().__init__()
        self.config = c = config
        self.encoder = VQGANEncoder(c)
        self.codebook = nn.Parameter(torch.empty(c.codebook_size, c.z_channels).uniform_(-1 / c.codebook_size,
                                                                                          1 / c.codebook_size))
        self.decoder = MaskGitVQGANDecoder(c)

    @property
    def vocab_size(self) -> int:
        return self.config.codebook_size

    @property
    def grid(self) -> int:
        return self.config.image_size // self.config.upsample

    @property
    def tokens_per_item(self) -> int:
        return self.grid**2

    def _nearest(self, z: Tensor) -> Tensor:
        """(b, z, g, g) -> ids (b, g*g): argmin of |z|^2 + |e|^2 - 2 z.e, the published model's arithmetic (the same
        expression keeps ties and near-ties resolved the same way)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        e = self.codebook.t()
        d = torch.addmm(flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(0, keepdim=True), flat, e, alpha=-2.0)
        return d.argmin(1).reshape(z.shape[0], -1)

    def _codes(self, ids: Tensor) -> Tensor:
        """ids (b, g*g) -> code grid (b, z, g, g)."""
        g = self.grid
        return self.codebook[ids].reshape(ids.shape[0], g, g, -1).permute(0, 3, 1, 2)

    @torch.no_grad()
    def encode(self, images):
        """Images (b, 3, S, S) in [0, 1] (or PIL images / paths) -> `Tokens` with ids (b, g*g)."""
        x = to_image_batch(images, self.config.image_size).to(self.codebook.device, self.codebook.dtype)
        return self.make_tokens(self._nearest(self.encoder(x)))

    @torch.no_grad()
    def decode(self, tokens) -> Tensor:
        """`Tokens` or ids (b, g*g) -> images (b, 3, S, S) in [0, 1]."""
        ids = self.as_tokens(tokens, length=self.tokens_per_item).ids
        return self.decoder(self._codes(ids)).clamp(0, 1)

    def forward(self, images: Tensor) -> TokenizerOutput:
        """Training pass: reconstruction MSE + codebook and commitment terms, straight-through codes."""
        x = to_image_batch(images, self.config.image_size)
        z = self.encoder(x)
        ids = self._nearest(z.detach())
        q = self._codes(ids)
        codebook = F.mse_loss(q, z.detach())
        commit = F.mse_loss(z, q.detach())
        recon = self.decoder(z + (q - z).detach())
        rec = F.mse_loss(recon, x)
        loss = rec + codebook + self.config.commitment_weight * commit
        return TokenizerOutput(recon, ids, loss, {"mse": rec.detach(), "commitment": commit.detach()})
