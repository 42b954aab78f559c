"""Image data: scikit-image's bundled photographs (offline, installable) or a user's folder, as random crops.

Crops are a pure function of (seed, index), so an epoch is reproducible and a resumed run sees the same data.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}

# Colour photographs bundled with scikit-image (no download). The last ones are held out for evaluation.
# (`cat` is `chelsea` again and `colorwheel` is synthetic, so neither is used.)
SKIMAGE_TRAIN = ("astronaut", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "camera",
                 "coins", "brick", "grass", "gravel")
SKIMAGE_EVAL = ("coffee", "motorcycle")


def skimage_photos(names: Sequence[str]) -> list[Tensor]:
    """Load scikit-image's bundled photographs by name as float (3, H, W) tensors in [0, 1]."""
    from skimage import data as skdata

    out = []
    for name in names:
        if name == "motorcycle":  # the left view of the stereo pair
            out.append(to_tensor(np.asarray(skdata.stereo_motorcycle()[0])))
            continue
        fn = getattr(skdata, name, None)
        if fn is None:
            raise ValueError(f"scikit-image has no bundled image {name!r}")
        out.append(to_tensor(np.asarray(fn())))
    return out


def to_tensor(array: np.ndarray) -> Tensor:
    """HxW, HxWx3 or HxWx4 uint8/float array -> (3, H, W) float32 in [0, 1]."""
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.float32)
    elif a.dtype.kind in "ui":
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    else:
        a = a.astype(np.float32)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a[..., :3])).permute(2, 0, 1).clamp(0, 1)


def load_image(path: str | os.PathLike) -> Tensor:
    """Read an image file as a (3, H, W) float tensor in [0, 1]."""
    try:
        with Image.open(path) as im:
            return to_tensor(np.asarray(im.convert("RGB")))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def image_folder(directory: str | os.PathLike) -> list[Tensor]:
    """All images under `directory` (recursively, sorted by path)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"image folder {directory} does not exist")
    paths = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {directory}")
    return [load_image(p) for p in paths]


def split_holdout(images: list[Tensor], every: int = 5) -> tuple[list[Tensor], list[Tensor]]:
    """Deterministic split of a user folder: every `every`-th image is held out (the last one for small folders)."""
    if len(images) < 2:
        raise ValueError("need at least two images to hold one out for evaluation")
    held_idx = set(range(every - 1, len(images), every)) or {len(images) - 1}
    train = [im for i, im in enumerate(images) if i not in held_idx]
    held = [im for i, im in enumerate(images) if i in held_idx]
    return train, held


class RandomCrops(Dataset):
    """`length` random `size`x`size` crops (random horizontal flips, mild rescaling) of `images`.

    A crop covers a square of side `size * z` pixels of the source, z drawn log-uniformly from `zoom`, resized to
    `size`: (1, 1) gives native-resolution crops. Item i is a deterministic function of (seed, i). Images smaller
    than `size` are upscaled first.
    """

    def __init__(self, images: list[Tensor], size: int, length: int = 100_000, seed: int = 0,
                 zoom: tuple[float, float] = (1.0, 2.0), flip: bool = True):
        if not images:
            raise ValueError("RandomCrops needs at least one image")
        self.images = [_ensure_min_size(im, size) for im in images]
        self.size, self.length, self.seed = size, length, seed
        self.zoom, self.flip = zoom, flip

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Tensor:
        if not 0 <= i < self.length:
            raise IndexError(i)
        g = torch.Generator().manual_seed(self.seed * 7_919_993 + i)
        im = self.images[int(torch.randint(len(self.images), (1,), generator=g))]
        _, h, w = im.shape
        lo, hi = math.log(self.zoom[0]), math.log(self.zoom[1])
        z = math.exp(lo + (hi - lo) * float(torch.rand((), generator=g)))
        s = min(int(round(self.size * z)), h, w)
        y = int(torch.randint(h - s + 1, (1,), generator=g))
        x = int(torch.randint(w - s + 1, (1,), generator=g))
        crop = im[:, y:y + s, x:x + s]
        if s != self.size:
            crop = torch.nn.functional.interpolate(crop[None], size=(self.size, self.size), mode="area")[0]
        if self.flip and bool(torch.rand((), generator=g) < 0.5):
            crop = crop.flip(-1)
        return crop.contiguous()


def _ensure_min_size(im: Tensor, size: int) -> Tensor:
    _, h, w = im.shape
    if min(h, w) >= size:
        return im
    f = size / min(h, w)
    return torch.nn.functional.interpolate(im[None], scale_factor=f, mode="bilinear", align_corners=False)[0].clamp(0, 1)


def default_image_data(size: int, data_dir: str | None = None, train_length: int = 100_000, eval_length: int = 64,
                       seed: int = 0) -> tuple[RandomCrops, RandomCrops]:
    """(train, eval) crop datasets: a user folder (with a deterministic hold-out), or the bundled photographs with
    `SKIMAGE_EVAL` held out entirely (eval crops come from photographs the model never trains on)."""
    if data_dir:
        train_images, eval_images = split_holdout(image_folder(data_dir))
    else:
        train_images, eval_images = skimage_photos(SKIMAGE_TRAIN), skimage_photos(SKIMAGE_EVAL)
    train = RandomCrops(train_images, size, train_length, seed=seed, zoom=(1.0, 2.0))
    # held-out crops at native resolution: what "a 64x64 crop of a photo" means to a user
    held = RandomCrops(eval_images, size, eval_length, seed=seed + 1_000_003, flip=False, zoom=(1.0, 1.0))
    return train, held
