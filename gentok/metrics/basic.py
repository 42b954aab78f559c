"""Reconstruction and codebook metrics. Nothing here downloads weights: perceptual metrics (a Frechet distance
and a feature distance in the space of a vision model) run only on a model directory the user has on disk."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch import Tensor

from gentok.quantizers.base import code_statistics


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image PSNR in dB of (b, ...) tensors in [0, data_range]."""
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(data_range**2 / mse)


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Per-image SSIM of (b, 3, H, W) tensors in [0, 1] (scikit-image's Gaussian-window implementation)."""
    from skimage.metrics import structural_similarity

    a = x.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    b = y.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    vals = [structural_similarity(p, q, channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False) for p, q in zip(a, b)]
    return torch.tensor(vals)


class CodebookStats:
    """Accumulates indices over many batches: usage and perplexity of the whole eval set, not of one batch."""

    def __init__(self, codebook_size: int, num_codebooks: int = 1):
        self.codebook_size, self.num_codebooks = codebook_size, num_codebooks
        self._chunks: list[Tensor] = []

    def update(self, indices: Tensor) -> None:
        self._chunks.append(indices.detach().reshape(-1, self.num_codebooks).cpu())

    def compute(self) -> dict[str, float]:
        if not self._chunks:
            return {"usage": 0.0, "perplexity": 0.0}
        all_idx = torch.cat(self._chunks)
        stats = [code_statistics(all_idx[:, i], self.codebook_size) for i in range(self.num_codebooks)]
        usage = float(sum(s[0] for s in stats) / len(stats))
        perplexity = float(sum(s[1] for s in stats) / len(stats))
        return {"usage": usage, "perplexity": perplexity,
                "perplexity_bits": math.log2(max(perplexity, 1.0))}


class VisionFeatures(torch.nn.Module):
    """Pooled features of a local transformers vision model directory (CLIP, DINOv2, ViT, ...), for a perceptual
    loss and a Frechet distance. Raises a clear error if the directory is missing; never downloads."""

    def __init__(self, model_dir: str | os.PathLike, size: int = 224):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if not os.path.isdir(model_dir):
            raise ValueError(f"perceptual weights directory {model_dir} does not exist (gentok never downloads them)")
        cfg = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        model = AutoModel.from_pretrained(model_dir, local_files_only=True)
        self.model = getattr(model, "vision_model", model).eval().requires_grad_(False)
        self.size = size
        mean = getattr(cfg, "image_mean", None) or [0.485, 0.456, 0.406]
        std = getattr(cfg, "image_std", None) or [0.229, 0.224, 0.225]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        x = torch.nn.functional.interpolate(images.float(), size=(self.size, self.size), mode="bilinear",
                                            align_corners=False)
        out = self.model(pixel_values=(x - self.mean) / self.std)
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state.mean(1)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (n, d) (the FID formula)."""
    from scipy import linalg

    a64, b64 = a.double().cpu().numpy(), b.double().cpu().numpy()
    mu1, mu2 = a64.mean(0), b64.mean(0)
    s1, s2 = np.cov(a64, rowvar=False), np.cov(b64, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def perceptual_metrics_or_skip(model_dir: str | None, originals: Tensor, recons: Tensor) -> dict[str, float]:
    """rFD (Frechet distance of features) and mean feature distance, or {} with a message when no weights given."""
    if not model_dir:
        print("rFID/LPIPS-style metrics skipped: pass --perceptual-weights DIR (a local transformers vision model)")
        return {}
    feats = VisionFeatures(model_dir)
    with torch.no_grad():
        fa, fb = feats(originals), feats(recons)
    return {"rfd": frechet_distance(fa, fb), "feature_l2": float((fa - fb).pow(2).sum(1).mean())}
