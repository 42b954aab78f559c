"""Map-style image datasets over photographs held in memory (the bundled photographs or a small folder): training
views and a fixed held-out set (`photo_data`). Larger dataset forms stream instead (`gentok.data.streams`).

Training sees each photograph through `gentok.data.views` (native crops, regions, whole photographs). Item i is a pure
function of (seed, i), so an epoch is reproducible and a resumed run sees the same data. The held-out set is the same
whatever scales training uses, so runs and the rate-distortion benchmark compare on equal terms: one whole view per
held-out photograph, then native and region crops, balanced over sources.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from gentok.data.photos import Photo, bundled_photos, folder_photos, split_by_source
from gentok.data.views import SCALES, TrainViews, parse_scales, view


def _check(photos: list[Photo], size: int, length: int) -> None:
    if not photos:
        raise ValueError("need at least one photograph")
    if size < 1 or length < 1:
        raise ValueError(f"size and length must be >= 1, got size {size}, length {length}")


class MultiScaleCrops(Dataset):
    """`length` random training views of `photos`: photograph uniform, then a view drawn by `TrainViews` (scale by
    its weight, position, flip, optional recolouring and quarter turns; see `gentok.data.views`). Item i is a
    deterministic function of (seed, i)."""

    def __init__(self, photos: list[Photo], size: int, length: int = 100_000, seed: int = 0,
                 scales: Sequence[str] | Mapping[str, float] | str = SCALES, flip: bool = True,
                 channel_shuffle: float = 0.0, color_jitter: float = 0.0, rotate: float = 0.0, hue: float = 0.0):
        _check(photos, size, length)
        self.views = TrainViews(size, scales, flip, channel_shuffle, color_jitter, rotate, hue)
        self.photos, self.size, self.length, self.seed = photos, size, length, seed

    # the policy's settings, read by recipes and tests
    channel_shuffle = property(lambda self: self.views.channel_shuffle)
    color_jitter = property(lambda self: self.views.color_jitter)
    rotate = property(lambda self: self.views.rotate)
    hue = property(lambda self: self.views.hue)
    flip = property(lambda self: self.views.flip)
    weights = property(lambda self: self.views.weights)
    scales = property(lambda self: self.views.names)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Tensor:
        if not 0 <= i < self.length:
            raise IndexError(i)
        g = torch.Generator().manual_seed(self.seed * 7_919_993 + i)
        photo = self.photos[int(torch.randint(len(self.photos), (1,), generator=g))]
        return self.views(photo.image, g)


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


def photo_data(size: int, data_dir: str | None = None, train_length: int = 100_000, eval_length: int = 64,
               seed: int = 0, scales: Sequence[str] | Mapping[str, float] | str = SCALES,
               eval_scales: Sequence[str] | str = SCALES, channel_shuffle: float = 0.0, color_jitter: float = 0.0,
               rotate: float = 0.0, hue: float = 0.0) -> tuple[MultiScaleCrops, HeldOutViews]:
    """(train, held-out) datasets of (3, size, size) images in [0, 1] from photographs held in memory, held out by
    source (`gentok.data.photos`).

    Args:
        size: the model's image size.
        data_dir: a user folder (subfolders are sources), or None for the bundled photographs.
        train_length / eval_length: number of items.
        seed: the data seed; the held-out set uses its own stream derived from it.
        scales: the training views' scales and how often each is drawn ('native:2,region:2,whole:1', a subset of
            `SCALES` such as 'native,whole' for equal weights, or a {scale: weight} mapping).
        eval_scales: the held-out views' scales; keep the default so every run is measured on the same set.
        channel_shuffle / color_jitter / rotate / hue: augmentation of the training views (`TrainViews`); the
            held-out views are never recoloured or turned.
    """
    train_photos, held_photos = split_by_source(folder_photos(data_dir)) if data_dir else bundled_photos()
    train = MultiScaleCrops(train_photos, size, train_length, seed=seed, scales=scales,
                            channel_shuffle=channel_shuffle, color_jitter=color_jitter, rotate=rotate, hue=hue)
    held = HeldOutViews(held_photos, size, eval_length, seed=seed + 1_000_003, scales=parse_scales(eval_scales))
    return train, held
