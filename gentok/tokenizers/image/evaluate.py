"""Held-out evaluation of image tokenizers: PSNR/SSIM, whole-set codebook statistics, and an honest equal-bit
baseline (area-downsample, uniform colour quantization, bilinear upsample), plus the picture a user looks at first."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gentok.hub import atomic_write_json
from gentok.metrics import CodebookStats, perceptual_metrics_or_skip, psnr, ssim
from gentok.tokenizers.image.io import save_grid


def _collect(dataset: Dataset, limit: int | None = None) -> Tensor:
    n = len(dataset) if limit is None else min(limit, len(dataset))
    return torch.stack([dataset[i] for i in range(n)])


@torch.no_grad()
def reconstruct(model, images: Tensor, batch_size: int = 64) -> tuple[Tensor, Tensor]:
    """(recon, ids) of `images` through `model.encode` / `model.decode`."""
    recons, ids = [], []
    for i in range(0, len(images), batch_size):
        t = model.encode(images[i:i + batch_size])
        ids.append(t)
        recons.append(model.decode(t))
    return torch.cat(recons), torch.cat(ids)


def image_eval_fn(model, loader: DataLoader) -> dict:
    """`fit` eval hook: PSNR over the held-out loader and codebook usage over all its tokens."""
    stats = CodebookStats(model.vocab_size)
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            ids = model.encode(batch)
            recon = model.decode(ids)
            stats.update(ids)
            total += float(psnr(recon, batch).sum())
            n += len(batch)
    return {"psnr": total / max(n, 1), **{f"code_{k}": v for k, v in stats.compute().items()}}


def equal_bit_baseline(images: Tensor, bits: float) -> tuple[Tensor, dict]:
    """Best fixed (resolution r, bits per channel q) with 3 * r * r * q <= `bits`: area-downsample to r x r,
    quantize each channel uniformly to 2**q levels, bilinear-upsample back. Chosen on mean PSNR over `images`."""
    size = images.shape[-1]
    best = None
    for q in range(1, 9):
        r = int(math.isqrt(int(bits // (3 * q))))
        if r < 1:
            continue
        r = min(r, size)
        small = F.interpolate(images, size=(r, r), mode="area")
        levels = 2**q - 1
        small = (small * levels).round() / levels
        up = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
        score = float(psnr(up, images).mean())
        if best is None or score > best[0]:
            best = (score, up, {"resolution": r, "bits_per_channel": q, "bits": 3 * r * r * q})
    if best is None:
        raise ValueError(f"a budget of {bits} bits is too small for the baseline")
    return best[1], best[2]


def evaluate_image_tokenizer(model, dataset: Dataset, limit: int | None = None,
                             perceptual_weights: str | None = None) -> dict:
    """Held-out PSNR/SSIM/codebook usage of `model` beside the equal-bit baseline."""
    images = _collect(dataset, limit)
    model.eval()
    recon, ids = reconstruct(model, images)
    stats = CodebookStats(model.vocab_size, ids.shape[-1] if ids.ndim == 3 else 1)
    stats.update(ids)
    base, base_cfg = equal_bit_baseline(images, model.bits_per_sample)
    report = {
        "images": len(images),
        "bits_per_image": float(model.bits_per_sample),
        "psnr": float(psnr(recon, images).mean()),
        "ssim": float(ssim(recon, images).mean()),
        "baseline_psnr": float(psnr(base, images).mean()),
        "baseline_ssim": float(ssim(base, images).mean()),
        "baseline": base_cfg,
        **{f"code_{k}": v for k, v in stats.compute().items()},
    }
    report.update(perceptual_metrics_or_skip(perceptual_weights, images, recon))
    report["_tensors"] = (images, recon, base)
    return report


def write_report(report: dict, model, dataset, output_dir: str, n_show: int = 8) -> dict:
    """Write eval.json and reconstructions.png (rows: originals, reconstructions, equal-bit baseline); print a
    one-screen summary. Returns the JSON-able report."""
    out = Path(output_dir)
    images, recon, base = report.pop("_tensors")
    grid = save_grid([images[:n_show], recon[:n_show], base[:n_show]], out / "reconstructions.png")
    report["grid"] = str(grid)
    atomic_write_json(out / "eval.json", report)
    print(
        f"held-out ({report['images']} crops, {report['bits_per_image']:.0f} bits/image): "
        f"PSNR {report['psnr']:.2f} dB, SSIM {report['ssim']:.3f} | equal-bit baseline "
        f"PSNR {report['baseline_psnr']:.2f} dB, SSIM {report['baseline_ssim']:.3f} "
        f"({report['baseline']['resolution']}px x {report['baseline']['bits_per_channel']} bits) | "
        f"codebook usage {report['code_usage']:.1%}\n"
        f"grid (originals / reconstructions / baseline): {grid}\nreport: {out / 'eval.json'}"
    )
    return report
