"""PatchGAN discriminator (Isola et al. 2017, as used by taming-transformers' VQGAN): a small strided CNN whose
output is a grid of real/fake logits, each judging one overlapping patch of the image, so it penalises local
texture (the blur an MSE-trained decoder settles on) rather than global layout.

GroupNorm stands where the original uses BatchNorm: the logits of an image then do not depend on the rest of its
batch, and data-parallel processes need no synchronised statistics.
"""

from __future__ import annotations

from torch import Tensor, nn

from gentok.config import config


@config
class PatchDiscriminatorConfig:
    channels: int = 64  # width of the first layer, doubled per stride-2 layer (taming: 64)
    layers: int = 3  # stride-2 layers (taming: 3); a 64 px input gives a 6 x 6 grid of patch logits
    max_channels: int = 512
    in_channels: int = 3

    def __post_init__(self):
        if self.channels < 1 or self.layers < 1 or self.in_channels < 1 or self.max_channels < self.channels:
            raise ValueError(f"invalid discriminator config: channels {self.channels}, layers {self.layers}, "
                             f"max_channels {self.max_channels}, in_channels {self.in_channels}")


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4) or 1, channels)


class PatchDiscriminator(nn.Module):
    """Images (b, C, H, W) in [-1, 1] -> patch logits (b, 1, h, w); positive means "real"."""

    def __init__(self, config: PatchDiscriminatorConfig = PatchDiscriminatorConfig()):
        super().__init__()
        self.config = c = config
        width = c.channels
        layers: list[nn.Module] = [nn.Conv2d(c.in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        for i in range(1, c.layers + 1):
            stride = 2 if i < c.layers else 1  # the last widening layer keeps the resolution, as in taming
            out = min(width * 2, c.max_channels)
            layers += [nn.Conv2d(width, out, 4, stride, 1, bias=False), _norm(out), nn.LeakyReLU(0.2)]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():  # DCGAN initialisation, as taming-transformers
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected images of shape (b, {self.config.in_channels}, H, W), got {tuple(x.shape)}")
        least = 3 * 2**self.config.layers  # the two stride-1 4x4 convolutions need a 3 x 3 input
        if min(x.shape[-2:]) < least:
            raise ValueError(f"images of {tuple(x.shape[-2:])} px are too small for a {self.config.layers}-layer "
                             f"discriminator (at least {least} px); use fewer layers")
        return self.net(x)
