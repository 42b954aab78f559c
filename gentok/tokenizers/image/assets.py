"""The image edge shared by image tokenizers: accept tensors, PIL images or paths; validate; write PNGs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from gentok.data.photos import load_image, to_tensor
from gentok.data.views import eval_view
from gentok.files import atomic_write_bytes


def to_image_batch(x, size: int, channels: int = 3) -> Tensor:
    """A float tensor (b, c, size, size) in [0, 1] from a tensor, a PIL image, a path, or a list of the latter two.

    Tensors must already have the model's size (a different size is an error, not a silent resize); PIL images and
    files go through the evaluation view of `gentok.data.views` (shorter side to `size`, centre crop), since that
    is what a user handing over a photo expects, and what held-out data gets.
    """
    if isinstance(x, Tensor):
        return check_images(x, size, channels)
    items = x if isinstance(x, (list, tuple)) else [x]
    if not items:
        raise ValueError("expected at least one image")
    out = []
    for item in items:
        if isinstance(item, Image.Image):
            im = to_tensor(np.asarray(item.convert("RGB")))
        elif isinstance(item, (str, os.PathLike)):
            if not os.path.isfile(item):
                raise ValueError(f"image file {item} does not exist")
            im = load_image(item)
        else:
            raise ValueError(f"expected a tensor, PIL image or image path, got {type(item).__name__}")
        out.append(eval_view(im, size))
    return torch.stack(out)


def check_images(x: Tensor, size: int, channels: int = 3) -> Tensor:
    """Raise `ValueError` unless `x` is a finite float tensor (b, channels, size, size) with values in [0, 1]."""
    if not x.dtype.is_floating_point:
        raise ValueError(f"expected float images in [0, 1], got dtype {x.dtype} (divide uint8 images by 255)")
    if x.ndim != 4 or x.shape[1] != channels or x.shape[2] != size or x.shape[3] != size:
        raise ValueError(f"expected images of shape (b, {channels}, {size}, {size}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"expected at least one image, got an empty batch of shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"expected pixel values in [0, 1], got range [{lo:.3f}, {hi:.3f}]")
    return x.clamp(0, 1)


def save_png(image: Tensor, path: str | os.PathLike) -> Path:
    """Write a (3, H, W) tensor in [0, 1] as a PNG, atomically."""
    return _write_png(Image.fromarray(_to_uint8(image)), path)


def _to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def _write_png(image: Image.Image, path: str | os.PathLike) -> Path:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def save_grid(rows: list[Tensor], path: str | os.PathLike, pad: int = 2, row_labels: list[str] | None = None,
              col_labels: list[str] | None = None) -> Path:
    """Save rows of images (each (n, 3, H, W), same n) as one PNG grid, optionally labelled: `row_labels` (one per
    row) are written left of the rows, `col_labels` (one per column) above the columns, so a reader can tell e.g.
    originals, reconstructions and baseline apart. Without labels the PNG is the bare grid."""
    n = rows[0].shape[0]
    h, w = rows[0].shape[-2:]
    grid = torch.ones(3, len(rows) * (h + pad) + pad, n * (w + pad) + pad)
    for r, row in enumerate(rows):
        for c in range(n):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[:, y:y + h, x:x + w] = row[c].detach().float().clamp(0, 1).cpu()
    if row_labels is None and col_labels is None:
        return save_png(grid, path)
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"save_grid: {len(row_labels)} row labels for {len(rows)} rows")
    if col_labels is not None and len(col_labels) != n:
        raise ValueError(f"save_grid: {len(col_labels)} column labels for {n} columns")
    return _write_png(_labelled(Image.fromarray(_to_uint8(grid)), h, w, pad, row_labels, col_labels), path)


def _labelled(grid: Image.Image, h: int, w: int, pad: int, row_labels, col_labels) -> Image.Image:
    """`grid` on a white canvas with a label column on the left and a label row on top."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default(size=11)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 2 * pad + max((measure.textlength(t, font=font) for t in row_labels), default=0) if row_labels else 0
    top = 11 + 2 * pad if col_labels else 0
    canvas = Image.new("RGB", (grid.width + int(left), grid.height + top), "white")
    canvas.paste(grid, (int(left), top))
    draw = ImageDraw.Draw(canvas)
    ink = (40, 40, 40)
    for r, text in enumerate(row_labels or []):
        draw.text((pad, top + pad + r * (h + pad) + h / 2), text, fill=ink, font=font, anchor="lm")
    for c, text in enumerate(col_labels or []):
        draw.text((int(left) + pad + c * (w + pad) + w / 2, pad), text, fill=ink, font=font, anchor="mt")
    return canvas


class ImageAssetsMixin:
    """`read_assets` / `write_assets` for tokenizers whose config has `image_size`."""

    def read_assets(self, paths):
        return to_image_batch([os.fspath(p) for p in paths], self.config.image_size)

    def write_assets(self, x: Tensor, out_dir, names):
        out_dir = Path(out_dir)
        return [save_png(im, out_dir / f"{Path(name).stem}.png") for im, name in zip(x, names)]
