"""LPIPS (Zhang et al. 2018): a learned perceptual distance between images, as a metric.

`lpips_from_features` is the formula (unit-normalise each layer's features over channels, squared difference,
weighted per channel by the learned linear layer, averaged over space, summed over layers); `LPIPS` runs it on the
published AlexNet/VGG backbone through torchmetrics, whose package ships the linear layers. The backbone weights are
torchvision's: a local file the user names (`backbone_weights`), or downloaded only when `download=True`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import Tensor, nn

# torchvision's file names for the backbones torchmetrics' LPIPS builds
BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


def lpips_from_features(fx: list[Tensor], fy: list[Tensor], lin: list[Tensor], eps: float = 1e-10) -> Tensor:
    """Per-image LPIPS (b,) from per-layer feature maps (b, c_l, h_l, w_l) of both images and per-layer channel
    weights (c_l,)."""
    if not (len(fx) == len(fy) == len(lin)):
        raise ValueError(f"expected one weight vector per layer: {len(fx)}, {len(fy)} and {len(lin)} layers")
    total = 0
    for a, b, w in zip(fx, fy, lin):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + eps)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + eps)
        total = total + ((a - b).pow(2) * w.view(1, -1, 1, 1)).sum(1).mean((1, 2))
    return total


class LPIPS(nn.Module):
    """Images (b, 3, H, W) in [0, 1] -> LPIPS (b,), lower is closer."""

    def __init__(self, net: str = "alex", backbone_weights: str | os.PathLike | None = None, download: bool = False):
        super().__init__()
        if net not in BACKBONE_FILES:
            raise ValueError(f"unknown LPIPS backbone {net!r}; choose from {sorted(BACKBONE_FILES)}")
        if backbone_weights is None and not download:
            raise ValueError(f"LPIPS needs its {net} backbone weights: pass a local file ({BACKBONE_FILES[net]}) or "
                             "ask for the download explicitly (download=True); gentok never fetches them by default")
        if backbone_weights is not None and not Path(backbone_weights).is_file():
            raise ValueError(f"LPIPS backbone weights file {backbone_weights} does not exist")
        try:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
        except (ImportError, ModuleNotFoundError) as e:
            raise ImportError(f"LPIPS needs torchvision: pip install 'gentok[metrics]' ({e})") from None
        old = os.environ.get("TORCH_HOME")
        tmp = None
        try:
            if backbone_weights is not None:  # torchvision looks for the file in $TORCH_HOME/hub/checkpoints
                tmp = tempfile.mkdtemp(prefix="gentok-lpips-")
                (Path(tmp) / "hub" / "checkpoints").mkdir(parents=True)
                os.symlink(Path(backbone_weights).resolve(), Path(tmp) / "hub" / "checkpoints" / BACKBONE_FILES[net])
                os.environ["TORCH_HOME"] = tmp
            self.metric = LearnedPerceptualImagePatchSimilarity(net_type=net, reduction="mean", normalize=True)
        finally:
            if tmp is not None:
                os.environ.pop("TORCH_HOME") if old is None else os.environ.__setitem__("TORCH_HOME", old)
                shutil.rmtree(tmp, ignore_errors=True)

    @torch.no_grad()
    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.metric.net(x.float().clamp(0, 1) * 2 - 1, y.float().clamp(0, 1) * 2 - 1).flatten()
