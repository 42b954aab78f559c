"""Images <-> channel-last patch sequences, the edge where (b, c, h, w) becomes (b, n, d)."""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn


def patchify(images: Tensor, patch: int) -> Tensor:
    """(b, c, H, W) -> (b, (H/p)(W/p), p*p*c)."""
    return rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=patch, p2=patch)


def unpatchify(patches: Tensor, patch: int, height: int, width: int, channels: int = 3) -> Tensor:
    """(b, n, p*p*c) -> (b, c, H, W)."""
    return rearrange(patches, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", h=height // patch, w=width // patch,
                     p1=patch, p2=patch, c=channels)


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> linear embedding: (b, c, H, W) -> (b, n, dim)."""

    def __init__(self, patch: int, channels: int, dim: int):
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(patch * patch * channels, dim)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(patchify(images, self.patch))
