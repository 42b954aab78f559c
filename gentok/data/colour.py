"""Hue in RGB images: conversion to and from HSV, and hue rotation (a training augmentation that teaches a tokenizer
every hue, and the held-out test of `gentok.evaluation.colour`)."""

from __future__ import annotations

import torch
from torch import Tensor


def rgb_to_hsv(x: Tensor) -> Tensor:
    """(b, 3, H, W) RGB in [0, 1] -> HSV with hue in [0, 1)."""
    r, g, b = x.unbind(1)
    mx, _ = x.max(1)
    mn, _ = x.min(1)
    delta = mx - mn
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(mx == r, ((g - b) / safe) % 6, torch.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(delta > 0, h / 6, torch.zeros_like(h)) % 1.0
    s = torch.where(mx > 0, delta / torch.where(mx > 0, mx, torch.ones_like(mx)), torch.zeros_like(mx))
    return torch.stack([h, s, mx], 1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6) % 6
    f = h * 6 - torch.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    sel = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros_like(x)
    for k, (r, g, b) in enumerate(sel):
        m = (i == k)[:, None]
        out = torch.where(m, torch.stack([r, g, b], 1), out)
    return out.clamp(0, 1)


def hue_rotate(images: Tensor, degrees: float) -> Tensor:
    """Images (b, 3, H, W) in [0, 1] with every hue turned by `degrees` (saturation and value unchanged)."""
    if degrees % 360 == 0:
        return images.clone()
    hsv = rgb_to_hsv(images.float())
    hsv[:, 0] = (hsv[:, 0] + degrees / 360.0) % 1.0
    return hsv_to_rgb(hsv)
