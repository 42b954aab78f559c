"""The image recipes' data flags: the dataset form and how it streams (`--data-format`, `--shuffle-buffer`,
`--data-workers`) and the training views (`--scales`, `--channel-shuffle`, `--color-jitter`, `--rotate`, `--hue`), turned into
`gentok.data.images.default_image_data` keywords by `data_options`. The recipe parser already has `--data`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence

from gentok.data.records import FORMATS
from gentok.data.views import SCALES, format_scales, parse_scale_weights

# The image recipes' training views and white-balance jitter, chosen by the TiTok recipe on its validation photographs
# (reasons and numbers in recipes/titok.py), shared by the binary recipe (same architecture) and by the FlexTok recipe
# (each checked on its own validation numbers)
RECIPE_SCALES = "native:0.45,region:0.45,whole:0.1"
RECIPE_COLOR_JITTER = 0.1


def _number(low: float, high: float, what: str, kind=float):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not low <= value <= high:  # NaN fails both
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


def add_data_arguments(parser: argparse.ArgumentParser,
                       default: str | Sequence[str] | Mapping[str, float] = SCALES, channel_shuffle: float = 0.0,
                       color_jitter: float = 0.0, rotate: float = 0.0, hue: float = 0.0) -> argparse.ArgumentParser:
    """Add the data flags (module docstring); `args.scales` is a {scale: weight} dict."""
    def scales_type(text: str) -> dict[str, float]:
        try:
            return parse_scale_weights(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    default = parse_scale_weights(default)
    parser.add_argument("--data-format", choices=FORMATS, default=None,
                        help="how to read --data (default: detected): a folder held in memory (subfolders are "
                             "sources), an ImageFolder tree (labels from class sub-folders; detected when DIR has "
                             "train/ and val/), WebDataset tar shards (paths, a folder or a pattern such as "
                             "'shards/train-{0000..0127}.tar'), Parquet files, or a `datasets` save_to_disk folder")
    parser.add_argument("--shuffle-buffer", type=_number(1, 1e9, "an integer >= 1", int), default=1000,
                        metavar="N", help="records in each loader worker's shuffle buffer when streaming (default "
                                          "1000)")
    parser.add_argument("--data-workers", type=_number(0, 256, "an integer in [0, 256]", int), default=None,
                        metavar="N", help="loader worker processes per training process when streaming (default: "
                                          "up to 4, as the CPU cores and shards allow; 0 reads in the main process)")
    parser.add_argument("--scales", type=scales_type, default=default, metavar="SCALES",
                        help=f"training views, comma separated from {','.join(SCALES)}, each optionally weighted by "
                             f"how often it is drawn (default: {format_scales(default)}): native-resolution crops, "
                             "large regions and whole photographs area-downsampled to the model size; the held-out "
                             "set always has all three")
    parser.add_argument("--channel-shuffle", type=_number(0, 1, "a probability in [0, 1]"),
                        default=channel_shuffle, metavar="P",
                        help="probability that a training view's RGB channels are permuted at random "
                             f"(default {channel_shuffle:g})")
    parser.add_argument("--color-jitter", type=_number(0, 1e6, "a finite number >= 0"),
                        default=color_jitter, metavar="STD",
                        help="standard deviation of a random log-gain on each RGB channel of each training view, a "
                             f"white-balance shift (default {color_jitter:g}; 0: off)")
    parser.add_argument("--rotate", type=_number(0, 1, "a probability in [0, 1]"), default=rotate, metavar="P",
                        help="probability that a training view is turned by a random quarter turn (90, 180 or 270 "
                             f"degrees; default {rotate:g})")
    parser.add_argument("--hue", type=_number(0, 1, "a probability in [0, 1]"), default=hue, metavar="P",
                        help="probability that a training view's hues are turned by a random angle (HSV; saturation "
                             f"and value kept), to show the model colours its photographs rarely hold (default {hue:g})")
    return parser


def data_options(args: argparse.Namespace) -> dict:
    """`default_image_data` keywords from the flags `add_data_arguments` added."""
    return {"scales": args.scales, "channel_shuffle": args.channel_shuffle, "color_jitter": args.color_jitter,
            "rotate": args.rotate, "hue": args.hue, "data_format": args.data_format, "shuffle_buffer": args.shuffle_buffer,
            "num_workers": args.data_workers}


def describe_data(args: argparse.Namespace) -> dict:
    """The data flags as a run records them (JSON-ready)."""
    return {**data_options(args), "scales": format_scales(args.scales)}
