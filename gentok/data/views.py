"""The resolution policy: how a photograph of any shape and size becomes a `size` x `size` view. Every dataset form
(bundled photographs, folders, ImageFolder trees, tar shards, Parquet, saved `datasets`) and `encode` on files use it.

Training draws random views at three scales (`SCALES`), each a pure function of a seeded generator:
- `native`: a `size` x `size` crop at the photograph's own resolution (fine texture);
- `region`: a square of side between 2 x `size` and the short side, area-downsampled to `size` (objects);
- `whole`: the largest square of the photograph (the full short side), area-downsampled to `size` (layout).
Training views are flipped horizontally at random and, when asked, recoloured: `color_jitter` scales each RGB
channel by a random gain (a white-balance shift, so a model does not learn its training photographs' colour balance)
and `channel_shuffle` permutes the channels of a share of the views; `rotate` turns a share of them by a random
quarter turn (`TrainViews`).

Evaluation (`eval_view`) takes the centred whole view: the shorter side scaled to `size`, then the centre crop.
Photographs whose short side is under `size` are first enlarged (bilinear) to a short side of `size`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from gentok.data.colour import hue_rotate

SCALES = ("native", "region", "whole")


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


def eval_view(image: Tensor, size: int) -> Tensor:
    """The evaluation view of `image` (3, H, W): shorter side scaled to `size`, centre crop -> (3, size, size)."""
    return view(image, size, "whole")


@dataclass(frozen=True)
class TrainViews:
    """Random training views of one photograph (module docstring): scale drawn by its weight (`scales` as
    `parse_scale_weights` reads it; names alone: uniform), position random, flipped horizontally half the time; with
    `channel_shuffle` p the RGB channels of a share p of the views are permuted at random, with `color_jitter` s each
    channel is scaled by exp(N(0, s^2)) and clipped to [0, 1], with `rotate` p a share p of the views is turned by
    90, 180 or 270 degrees. `views(image, g)` is a pure function of the image and the generator's state."""
    size: int
    scales: Mapping[str, float] | Sequence[str] | str = SCALES
    flip: bool = True
    channel_shuffle: float = 0.0
    color_jitter: float = 0.0
    rotate: float = 0.0
    hue: float = 0.0
    weights: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        if not 0.0 <= self.channel_shuffle <= 1.0:
            raise ValueError(f"channel_shuffle is a probability in [0, 1], got {self.channel_shuffle}")
        if not 0.0 <= self.color_jitter < math.inf:
            raise ValueError(f"color_jitter is a standard deviation >= 0, got {self.color_jitter}")
        if not 0.0 <= self.rotate <= 1.0:
            raise ValueError(f"rotate is a probability in [0, 1], got {self.rotate}")
        if not 0.0 <= self.hue <= 1.0:
            raise ValueError(f"hue is a probability in [0, 1], got {self.hue}")
        object.__setattr__(self, "weights", parse_scale_weights(self.scales))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.weights)

    def draw_scale(self, g: torch.Generator) -> str:
        names = self.names
        if len(set(self.weights.values())) == 1:  # names alone: the same stream as before weights existed
            return names[int(torch.randint(len(names), (1,), generator=g))]
        cumulative = (torch.tensor(list(self.weights.values()), dtype=torch.float64).cumsum(0)
                      / sum(self.weights.values()))
        u = torch.rand((), generator=g, dtype=torch.float64)
        return names[min(int(torch.searchsorted(cumulative, u, right=True)), len(names) - 1)]

    def __call__(self, image: Tensor, g: torch.Generator) -> Tensor:
        """A random (3, size, size) training view of `image` (3, H, W) drawn from `g`."""
        crop = view(image, self.size, self.draw_scale(g), g)
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
