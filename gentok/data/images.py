"""Image data: every real photograph that installs offline with gentok's dependencies, or a user's folder, sampled
at several scales.

Users judge a tokenizer on whole photographs it never saw, so training sees each photograph three ways (`SCALES`):
- `native`: a `size` x `size` crop at the photograph's own resolution (fine texture);
- `region`: a square of side between 2 x `size` and the short side, area-downsampled to `size` (objects);
- `whole`: the largest square of the photograph (the full short side), area-downsampled to `size` (layout).
Training views are flipped horizontally at random and, when asked, recoloured: `color_jitter` scales each RGB
channel by a random gain (a white-balance shift, so a model does not learn its training photographs' colour balance)
and `channel_shuffle` permutes the channels of a share of the views; `rotate` turns a share of them by a random
quarter turn. Item i is a pure function of (seed, i), so an epoch is reproducible and a resumed run sees the same
data.

Hold-out is by **source**, never by crop: a held-out photograph contributes nothing to training.
- Bundled (the default): training uses scikit-image's real photographs (`SKIMAGE_PHOTOS`) except `coffee` and
  `motorcycle`, which are held out whole, and scikit-learn's two (`SKLEARN_PHOTOS`); matplotlib's sample
  photograph (`grace_hopper.jpg`) is a source kept entirely out of training. Evaluation reports each source apart
  ("scikit-image": unseen photographs of a source it trained on; "matplotlib": an unseen source).
- `--data DIR`: each top-level subfolder is a source (files directly in DIR form a source named after DIR). With two
  or more sources the last one (sorted by name) is kept entirely out of training; from the others every 5th image
  (its last image for sources under 5) is held out whole.
The held-out set is the same whatever scales training uses, so runs and the rate-distortion benchmark compare on
equal terms: one whole view per held-out photograph, then native and region crops, balanced over sources.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from gentok.data.colour import hue_rotate

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
SCALES = ("native", "region", "whole")
# The image recipes' training views and white-balance jitter, chosen by the TiTok recipe on its validation photographs
# (reasons and numbers in recipes/titok.py), shared by the binary recipe (same architecture) and by the FlexTok recipe
# (each checked on its own validation numbers)
RECIPE_SCALES = "native:0.45,region:0.45,whole:0.1"
RECIPE_COLOR_JITTER = 0.1

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


# -- loading --------------------------------------------------------------------------------------------------------
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


def _image_paths(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def image_folder(directory: str | os.PathLike) -> list[Tensor]:
    """All images under `directory` (recursively, sorted by path)."""
    return [ph.image for ph in folder_photos(directory)]


def folder_photos(directory: str | os.PathLike) -> list[Photo]:
    """All images under `directory` (recursively, sorted by path), each labelled with its source: the top-level
    subfolder it lies in, or the folder's own name for files directly inside it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"image folder {directory} does not exist")
    paths = _image_paths(directory)
    if not paths:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {directory}")
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


# -- views ----------------------------------------------------------------------------------------------------------
def parse_scales(text: str | Sequence[str]) -> tuple[str, ...]:
    """'native,whole' or ('native', 'whole') -> a validated tuple of scale names (see `SCALES`); weights written as
    'native:2' are accepted and dropped (`parse_scale_weights` keeps them)."""
    return tuple(parse_scale_weights(text))


def parse_scale_weights(text: str | Sequence[str] | Mapping[str, float]) -> dict[str, float]:
    """'native:2,region:2,whole:1', 'native,whole' (weight 1 each), a sequence of names or a {name: weight} mapping
    -> a validated {scale: weight} dict in the given order: how often training draws each scale."""
    if isinstance(text, Mapping):
        items = [(str(k), v) for k, v in text.items()]
    else:
        items = []
        for part in (text.split(",") if isinstance(text, str) else text):
            name, _, weight = str(part).strip().partition(":")
            if name.strip():
                items.append((name.strip(), weight.strip() or 1.0))
    bad = [n for n, _ in items if n not in SCALES]
    if not items or bad:
        raise ValueError(f"scales must be a comma-separated subset of {', '.join(SCALES)} (optionally weighted, "
                         f"'native:2,region:2,whole:1'), got {text!r}")
    weights: dict[str, float] = {}
    for name, weight in items:
        try:
            w = float(weight)
        except (TypeError, ValueError):
            w = float("nan")
        if not (math.isfinite(w) and w > 0):
            raise ValueError(f"scale weight for {name!r} must be a positive number, got {weight!r}")
        weights.setdefault(name, w)
    return weights


def format_scales(weights: Mapping[str, float]) -> str:
    """{scale: weight} -> 'native:2,region:2,whole:1' ('native,region,whole' when the weights are all equal)."""
    equal = len(set(weights.values())) == 1
    return ",".join(n if equal else f"{n}:{w:g}" for n, w in weights.items())


def view(image: Tensor, size: int, scale: str, g: torch.Generator | None = None) -> Tensor:
    """A `size` x `size` view of `image` (3, H, W) at `scale` (module docstring). With a generator the view's side
    and position are drawn from it; without one the view is the centred one (region: the geometric mean side)."""
    image = _ensure_min_size(image, size)
    _, h, w = image.shape
    short = min(h, w)

    def draw() -> float:
        return 0.5 if g is None else float(torch.rand((), generator=g))

    if scale == "native":
        side = size
    elif scale == "region":
        lo, hi = math.log(min(2 * size, short)), math.log(short)
        side = int(round(math.exp(lo + (hi - lo) * draw())))
    elif scale == "whole":
        side = short
    else:
        raise ValueError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    side = min(max(side, size), short)
    y, x = int(round((h - side) * draw())), int(round((w - side) * draw()))
    crop = image[:, y:y + side, x:x + side]
    if side != size:  # the area filter: each output pixel averages the source pixels it covers
        crop = F.interpolate(crop[None], size=(size, size), mode="area")[0]
    return crop.contiguous()


def _ensure_min_size(im: Tensor, size: int) -> Tensor:
    _, h, w = im.shape
    if min(h, w) >= size:
        return im
    f = size / min(h, w)
    return F.interpolate(im[None], scale_factor=f, mode="bilinear", align_corners=False)[0].clamp(0, 1)


def _check(photos: list[Photo], size: int, length: int) -> None:
    if not photos:
        raise ValueError("need at least one photograph")
    if size < 1 or length < 1:
        raise ValueError(f"size and length must be >= 1, got size {size}, length {length}")


class MultiScaleCrops(Dataset):
    """`length` random training views of `photos`: photograph uniform, scale drawn by its weight (`scales` as
    `parse_scale_weights` reads it; names alone: uniform), position random, flipped horizontally half the time; with
    `channel_shuffle` p the RGB channels of a share p of the views are permuted at random, with `color_jitter` s each
    channel is scaled by exp(N(0, s^2)) and clipped to [0, 1], with `rotate` p a share p of the views is turned by
    90, 180 or 270 degrees. Item i is a deterministic function of (seed, i)."""

    def __init__(self, photos: list[Photo], size: int, length: int = 100_000, seed: int = 0,
                 scales: Sequence[str] | Mapping[str, float] | str = SCALES, flip: bool = True,
                 channel_shuffle: float = 0.0, color_jitter: float = 0.0, rotate: float = 0.0,
                 hue: float = 0.0):
        _check(photos, size, length)
        if not 0.0 <= hue <= 1.0:
            raise ValueError(f"hue is a probability in [0, 1], got {hue}")
        if not 0.0 <= channel_shuffle <= 1.0:
            raise ValueError(f"channel_shuffle is a probability in [0, 1], got {channel_shuffle}")
        if not 0.0 <= color_jitter < math.inf:
            raise ValueError(f"color_jitter is a standard deviation >= 0, got {color_jitter}")
        if not 0.0 <= rotate <= 1.0:
            raise ValueError(f"rotate is a probability in [0, 1], got {rotate}")
        self.photos, self.size, self.length, self.seed = photos, size, length, seed
        self.channel_shuffle, self.color_jitter, self.rotate, self.hue = channel_shuffle, color_jitter, rotate, hue
        self.weights = parse_scale_weights(scales)
        self.scales, self.flip = tuple(self.weights), flip
        self._uniform = len(set(self.weights.values())) == 1  # names alone: the same stream as before weights existed
        total = sum(self.weights.values())
        self._cumulative = torch.tensor(list(self.weights.values()), dtype=torch.float64).cumsum(0) / total

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Tensor:
        if not 0 <= i < self.length:
            raise IndexError(i)
        g = torch.Generator().manual_seed(self.seed * 7_919_993 + i)
        photo = self.photos[int(torch.randint(len(self.photos), (1,), generator=g))]
        if self._uniform:
            scale = self.scales[int(torch.randint(len(self.scales), (1,), generator=g))]
        else:
            u = torch.rand((), generator=g, dtype=torch.float64)
            scale = self.scales[min(int(torch.searchsorted(self._cumulative, u, right=True)), len(self.scales) - 1)]
        crop = view(photo.image, self.size, scale, g)
        if self.flip and bool(torch.rand((), generator=g) < 0.5):
            crop = crop.flip(-1)
        # colour draws only when enabled, so the stream without them is unchanged
        if self.channel_shuffle and bool(torch.rand((), generator=g) < self.channel_shuffle):
            crop = crop[torch.randperm(3, generator=g)]
        if self.color_jitter:
            gains = torch.exp(torch.randn(3, generator=g) * self.color_jitter)
            crop = (crop * gains[:, None, None]).clamp(0, 1)
        if self.rotate and bool(torch.rand((), generator=g) < self.rotate):
            crop = crop.rot90(int(torch.randint(1, 4, (), generator=g)), (1, 2))
        if self.hue and bool(torch.rand((), generator=g) < self.hue):
            crop = hue_rotate(crop[None], float(torch.rand((), generator=g)) * 360)[0]
        return crop


class HeldOutViews(Dataset):
    """A fixed held-out set of `length` views of `photos`, no flips: the centred whole view of every photograph
    first (while `whole` is among `scales`), then random crops at the other scales, round-robin over
    (source, scale) and over each source's photographs. `sources[i]`, `scales[i]` and `names[i]` label item i, so an
    evaluation can report each source and scale apart."""

    def __init__(self, photos: list[Photo], size: int, length: int = 64, seed: int = 0,
                 scales: Sequence[str] = SCALES):
        _check(photos, size, length)
        self.photos, self.size, self.seed = photos, size, seed
        scales = parse_scales(scales)
        by_source: dict[str, list[int]] = {}
        for j, ph in enumerate(photos):
            by_source.setdefault(ph.source, []).append(j)
        plan: list[tuple[int, str]] = []  # (photo index, scale)
        if "whole" in scales:
            plan = [(j, "whole") for js in zip(*_padded(by_source.values())) for j in js if j is not None][:length]
        self._centred = len(plan)  # the first views are the centred whole ones; later views are drawn
        crop_scales = [s for s in scales if s != "whole"] or ["whole"]  # whole only: more whole views, off-centre
        groups = [(s, js) for s in crop_scales for js in by_source.values()]
        turn = 0
        while len(plan) < length:
            scale, js = groups[turn % len(groups)]
            plan.append((js[(turn // len(groups)) % len(js)], scale))
            turn += 1
        self.plan = plan
        self.sources = [photos[j].source for j, _ in plan]
        self.scales = [s for _, s in plan]
        self.names = [photos[j].name for j, _ in plan]

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> Tensor:
        if not 0 <= i < len(self.plan):
            raise IndexError(i)
        j, scale = self.plan[i]
        g = None if i < self._centred else torch.Generator().manual_seed(self.seed * 7_919_993 + i)
        return view(self.photos[j].image, self.size, scale, g)


def _padded(groups) -> list[list[int | None]]:
    """Lists padded with None to one length, so zip interleaves them (one photograph per source in turn)."""
    groups = [list(g) for g in groups]
    n = max(len(g) for g in groups)
    return [g + [None] * (n - len(g)) for g in groups]


# -- what recipes call ----------------------------------------------------------------------------------------------
def default_image_data(size: int, data_dir: str | None = None, train_length: int = 100_000, eval_length: int = 64,
                       seed: int = 0, scales: Sequence[str] | Mapping[str, float] | str = SCALES,
                       eval_scales: Sequence[str] | str = SCALES, channel_shuffle: float = 0.0,
                       color_jitter: float = 0.0, rotate: float = 0.0,
                       hue: float = 0.0) -> tuple[MultiScaleCrops, HeldOutViews]:
    """(train, held-out) datasets of (3, size, size) images in [0, 1], held out by source (module docstring).

    Args:
        size: the model's image size.
        data_dir: a user folder (subfolders are sources), or None for the bundled photographs.
        train_length / eval_length: number of items.
        seed: the data seed; the held-out set uses its own stream derived from it.
        scales: the training views' scales and how often each is drawn ('native:2,region:2,whole:1', a subset of
            `SCALES` such as 'native,whole' for equal weights, or a {scale: weight} mapping).
        eval_scales: the held-out views' scales; keep the default so every run is measured on the same set.
        channel_shuffle / color_jitter / rotate: augmentation of the training views (`MultiScaleCrops`); the
            held-out views are never recoloured or turned.
    """
    train_photos, held_photos = split_by_source(folder_photos(data_dir)) if data_dir else bundled_photos()
    train = MultiScaleCrops(train_photos, size, train_length, seed=seed, scales=scales,
                            channel_shuffle=channel_shuffle, color_jitter=color_jitter, rotate=rotate, hue=hue)
    held = HeldOutViews(held_photos, size, eval_length, seed=seed + 1_000_003, scales=parse_scales(eval_scales))
    return train, held


def add_data_arguments(parser: argparse.ArgumentParser,
                       default: str | Sequence[str] | Mapping[str, float] = SCALES, channel_shuffle: float = 0.0,
                       color_jitter: float = 0.0, rotate: float = 0.0, hue: float = 0.0) -> argparse.ArgumentParser:
    """The image recipes' training-view flags (the recipe parser already has `--data`): `--scales` (`args.scales` is
    a {scale: weight} dict), `--channel-shuffle`, `--color-jitter` and `--rotate`; `data_options(args)` turns them into
    `default_image_data` keywords."""
    def scales_type(text: str) -> dict[str, float]:
        try:
            return parse_scale_weights(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    def number(low: float, high: float, what: str):
        def parse(text: str) -> float:
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not low <= value <= high:  # NaN fails both
                raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
            return value
        return parse

    default = parse_scale_weights(default)
    parser.add_argument("--scales", type=scales_type, default=default, metavar="SCALES",
                        help=f"training views, comma separated from {','.join(SCALES)}, each optionally weighted by "
                             f"how often it is drawn (default: {format_scales(default)}): native-resolution crops, "
                             "large regions and whole photographs area-downsampled to the model size; the held-out "
                             "set always has all three")
    parser.add_argument("--channel-shuffle", type=number(0, 1, "a probability in [0, 1]"),
                        default=channel_shuffle, metavar="P",
                        help="probability that a training view's RGB channels are permuted at random "
                             f"(default {channel_shuffle:g})")
    parser.add_argument("--color-jitter", type=number(0, 1e6, "a finite number >= 0"),
                        default=color_jitter, metavar="STD",
                        help="standard deviation of a random log-gain on each RGB channel of each training view, a "
                             f"white-balance shift (default {color_jitter:g}; 0: off)")
    parser.add_argument("--rotate", type=number(0, 1, "a probability in [0, 1]"), default=rotate, metavar="P",
                        help="probability that a training view is turned by a random quarter turn (90, 180 or 270 "
                             f"degrees; default {rotate:g})")
    parser.add_argument("--hue", type=number(0, 1, "a probability in [0, 1]"), default=hue, metavar="P",
                        help="probability that a training view's hues are turned by a random angle (HSV; saturation "
                             f"and value kept), so the model learns colours its photographs rarely show (default {hue:g})")
    return parser


def data_options(args: argparse.Namespace) -> dict:
    """`default_image_data` keywords from the flags `add_data_arguments` added."""
    return {"scales": args.scales, "channel_shuffle": args.channel_shuffle, "color_jitter": args.color_jitter,
            "rotate": args.rotate, "hue": args.hue}


def describe_data(args: argparse.Namespace) -> dict:
    """The training-view flags as a run records them (JSON-ready)."""
    return {**data_options(args), "scales": format_scales(args.scales)}
