"""Photographs: decoding image files, the real photographs that install offline with gentok's dependencies, user
folders, and the hold-out by source.

Hold-out is by **source**, never by crop: a held-out photograph contributes nothing to training.
- Bundled (the default): training uses scikit-image's real photographs (`SKIMAGE_PHOTOS`) except `coffee` and
  `motorcycle`, which are held out whole, and scikit-learn's two (`SKLEARN_PHOTOS`); matplotlib's sample
  photograph (`grace_hopper.jpg`) is a source kept entirely out of training. Evaluation reports each source apart
  ("scikit-image": unseen photographs of a source it trained on; "matplotlib": an unseen source).
- A user folder (`--data DIR`): each top-level subfolder is a source (files directly in DIR form a source named after
  DIR). With two or more sources the last one (sorted by name) is kept entirely out of training; from the others
  every 5th image (its last image for sources under 5) is held out whole.
Photographs are held in memory as float tensors; datasets too large for that stream instead (`gentok.data.streams`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}

# Every real photograph bundled with scikit-image 0.2x (files inside the wheel: no download). Not used: the synthetic
# images (`logo`, `colorwheel`, `checkerboard`, `binary_blobs`, `shepp_logan_phantom`,
# `horse` - a silhouette), `cat` (= `chelsea`), `lfw_subset` (25x25 faces, too small to crop), the right view of the
# stereo motorcycle (a near copy of the left one) and the images scikit-image downloads on first use (`eagle`,
# `lily`, `kidney`, `cells3d`, `brain`, `skin`, ...). Grey photographs are repeated into three channels.
SKIMAGE_PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "motorcycle", "hubble_deep_field",
                  "immunohistochemistry", "retina", "coins", "moon", "clock", "cell", "microaneurysms", "text",
                  "page", "brick", "grass", "gravel")
SKIMAGE_EVAL = ("coffee", "motorcycle")  # held out whole
SKIMAGE_TRAIN = tuple(n for n in SKIMAGE_PHOTOS if n not in SKIMAGE_EVAL)
# scikit-learn (a dependency of sentence-transformers, and so of gentok) ships two colour photographs
# (sklearn/datasets/images): a temple and a flower, 640x427. Both train: 7 of scikit-image's 17 training photographs
# are colour, and a model that sees few colour scenes learns their colour balance.
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
# matplotlib's mpl-data/sample_data holds one photograph (the other pictures there are clip art, logos or data)
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)  # a whole source kept out of training


@dataclass(frozen=True)
class Photo:
    """One photograph: where it comes from and its pixels (3, H, W) float in [0, 1]."""
    name: str
    source: str
    image: Tensor


# -- decoding --------------------------------------------------------------------------------------------------------
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
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def decode_image(data: bytes, name: str = "image") -> Tensor:
    """Decode an encoded image (PNG, JPEG, ... bytes) as a (3, H, W) float tensor in [0, 1]; `ValueError` naming
    `name` when the bytes are not a readable image (truncated, corrupt, not an image)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return to_tensor(np.asarray(im.convert("RGB")))
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise ValueError(f"cannot read image {name}: {e}") from None


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


def matplotlib_photos(names: Sequence[str] = MATPLOTLIB_PHOTOS) -> list[Tensor]:
    """Load photographs from matplotlib's bundled sample data (mpl-data/sample_data) by file name."""
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "sample_data"
    return [load_image(root / name) for name in names]


def sklearn_photos(names: Sequence[str] = SKLEARN_PHOTOS) -> list[Tensor]:
    """Load scikit-learn's bundled sample photographs (sklearn/datasets/images) by file name."""
    from sklearn.datasets import load_sample_image

    return [to_tensor(load_sample_image(name)) for name in names]


def bundled_photos() -> tuple[list[Photo], list[Photo]]:
    """(training photographs, held-out photographs) of the bundled data; see the module docstring."""
    def photos(names, images, source):
        return [Photo(Path(n).stem, source, im) for n, im in zip(names, images)]

    train = (photos(SKIMAGE_TRAIN, skimage_photos(SKIMAGE_TRAIN), "scikit-image")
             + photos(SKLEARN_PHOTOS, sklearn_photos(), "scikit-learn"))
    held = (photos(SKIMAGE_EVAL, skimage_photos(SKIMAGE_EVAL), "scikit-image")
            + photos(MATPLOTLIB_PHOTOS, matplotlib_photos(), "matplotlib"))
    return train, held


def image_paths(directory: str | os.PathLike) -> list[Path]:
    """Image files under `directory` (recursively; `IMAGE_SUFFIXES`), sorted by path; a `ValueError` when the folder
    does not exist or holds no image."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"image folder {directory} does not exist")
    paths = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {directory}")
    return paths


def image_folder(directory: str | os.PathLike) -> list[Tensor]:
    """All images under `directory` (recursively, sorted by path)."""
    return [ph.image for ph in folder_photos(directory)]


def folder_photos(directory: str | os.PathLike) -> list[Photo]:
    """All images under `directory` (recursively, sorted by path), each labelled with its source: the top-level
    subfolder it lies in, or the folder's own name for files directly inside it."""
    directory = Path(directory)
    paths = image_paths(directory)
    out = []
    for p in paths:
        rel = p.relative_to(directory)
        source = rel.parts[0] if len(rel.parts) > 1 else directory.resolve().name
        out.append(Photo(rel.as_posix(), source, load_image(p)))
    return out


def split_holdout(images: list, every: int = 5) -> tuple[list, list]:
    """Deterministic split of a list: every `every`-th item is held out (the last one for lists under `every`)."""
    if len(images) < 2:
        raise ValueError("need at least two images to hold one out for evaluation")
    held_idx = set(range(every - 1, len(images), every)) or {len(images) - 1}
    train = [im for i, im in enumerate(images) if i not in held_idx]
    held = [im for i, im in enumerate(images) if i in held_idx]
    return train, held


def split_by_source(photos: list[Photo], every: int = 5) -> tuple[list[Photo], list[Photo]]:
    """(train, held-out) whole photographs: with two or more sources the last (sorted by name) is held out entirely;
    every `every`-th photograph of each other source with at least two is held out too (module docstring)."""
    sources = sorted({ph.source for ph in photos})
    kept_out = sources[-1] if len(sources) > 1 else None
    train, held = [], []
    for s in sources:
        group = [ph for ph in photos if ph.source == s]
        if s == kept_out:
            held += group
        elif len(group) >= 2:
            t, h = split_holdout(group, every)
            train, held = train + t, held + h
        else:
            train += group
    if not train or not held:
        raise ValueError(f"need at least two images to hold one out for evaluation, got {len(photos)} "
                         f"in {len(sources)} source(s)")
    return train, held
