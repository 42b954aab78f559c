"""Colour that generalises: an image tokenizer judged at every hue, so it cannot pass by knowing the training palette.

The held-out views are hue-rotated (0, 60, ..., 300 degrees, in HSV: saturation and value kept) and channel-permuted
(the six orders of R, G, B); each version is reconstructed and compared with the equal-bit baseline of
`gentok.evaluation.image` (which is colour-blind by construction: it quantizes every channel alike). Beside PSNR and
SSIM two colour errors: `colour_error`, the mean absolute difference of each image's mean colour (a grey cast on
green grass shows here), and `hue_error`, the mean circular hue difference in degrees over the saturated pixels of
the original (saturation >= 0.25, value >= 0.2), also reported for green (hue 75-165) and yellow (45-75) pixels.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from gentok.data.colour import hue_rotate, rgb_to_hsv
from gentok.evaluation.image import decode_options_of, equal_bit_baseline, reconstruct
from gentok.metrics import psnr, ssim

ROTATIONS = (0, 60, 120, 180, 240, 300)
PERMUTATIONS = tuple(itertools.permutations(range(3)))
HUE_BANDS = {"green": (75.0, 165.0), "yellow": (45.0, 75.0)}


def colour_errors(recon: Tensor, images: Tensor) -> dict[str, float]:
    """Mean-colour error and hue error (degrees) of reconstructions against the originals (module docstring)."""
    out = {"colour_error": float((recon.float().mean((2, 3)) - images.float().mean((2, 3))).abs().mean())}
    a, b = rgb_to_hsv(images.float()), rgb_to_hsv(recon.float().clamp(0, 1))
    diff = (a[:, 0] - b[:, 0]).abs()
    diff = torch.minimum(diff, 1 - diff) * 360  # circular, degrees
    saturated = (a[:, 1] >= 0.25) & (a[:, 2] >= 0.2)
    out["hue_error"] = float(diff[saturated].mean()) if saturated.any() else None
    hue = a[:, 0] * 360
    for name, (lo, hi) in HUE_BANDS.items():
        m = saturated & (hue >= lo) & (hue < hi)
        out[f"hue_error_{name}"] = float(diff[m].mean()) if m.any() else None  # None: no such pixels
        out[f"pixels_{name}"] = int(m.sum())
    return out


def _row(model, images: Tensor, batch_size: int, options: dict) -> tuple[dict, Tensor]:
    recon, tokens = reconstruct(model, images, batch_size, **options)
    bits = float(tokens.bits_per_item.mean())
    base, _ = equal_bit_baseline(images, bits)
    p, s, bp = psnr(recon, images), ssim(recon, images), psnr(base, images)
    row = {"psnr": float(p.mean()), "ssim": float(s.mean()), "baseline_psnr": float(bp.mean()),
           "baseline_ssim": float(ssim(base, images).mean()), "per_view_psnr": [round(float(v), 3) for v in p],
           "per_view_baseline_psnr": [round(float(v), 3) for v in bp], **colour_errors(recon, images)}
    row["beats_baseline"] = row["psnr"] > row["baseline_psnr"]
    return row, recon


@torch.no_grad()
def evaluate_colour(model, images: Tensor, rotations=ROTATIONS, permutations=PERMUTATIONS, batch_size: int = 64,
                    **decode_options) -> dict:
    """Quality of `model` on `images` (b, 3, S, S) at every hue rotation and channel order.

    Returns {"rotations": [row per rotation], "permutations": [row per channel order], "_tensors": pictures}; each
    row has PSNR/SSIM, the equal-bit baseline's, per-view PSNRs and the colour errors."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (b, 3, S, S), got {tuple(images.shape)}")
    model.eval()
    options = decode_options_of(model, decode_options)
    rows, shown = [], {}
    for deg in rotations:
        x = hue_rotate(images, deg)
        row, recon = _row(model, x, batch_size, options)
        rows.append({"degrees": deg, **row})
        shown[deg] = (x, recon)
    perm_rows = []
    for perm in permutations:
        row, _ = _row(model, images[:, list(perm)], batch_size, options)
        perm_rows.append({"channels": "".join("RGB"[c] for c in perm), **row})
    return {"rotations": rows, "permutations": perm_rows, "_tensors": shown}


def _deg(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def summary(report: dict, name: str) -> str:
    """A one-screen table of a colour report."""
    lines = [f"{name}: every hue (held-out views hue-rotated) and channel order",
             f"{'version':<10} {'PSNR':>7} {'SSIM':>6} | {'base PSNR':>9} {'SSIM':>6} | {'colour err':>10} "
             f"{'hue err':>7} {'green':>6} {'yellow':>6}"]
    for row in report["rotations"] + report["permutations"]:
        label = f"{row['degrees']} deg" if "degrees" in row else row["channels"]
        lines.append(f"{label:<10} {row['psnr']:>7.2f} {row['ssim']:>6.3f} | {row['baseline_psnr']:>9.2f} "
                     f"{row['baseline_ssim']:>6.3f} | {row['colour_error']:>10.4f} {_deg(row['hue_error']):>7} "
                     f"{_deg(row['hue_error_green']):>6} {_deg(row['hue_error_yellow']):>6}")
    return "\n".join(lines)
