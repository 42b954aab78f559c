"""What the image recipes call: `default_image_data`, training views and a held-out set from any dataset form.

Forms (`--data`, detected by `gentok.data.records.detect_format` unless `data_format` names one):
- none: the bundled photographs; `folder`: a user folder held in memory, subfolders as sources
  (`gentok.data.datasets`, `gentok.data.photos`): map-style datasets of `train_length` views;
- `imagefolder`, `webdataset` (tar shards), `parquet`, `hf` (a `save_to_disk` directory): streamed
  (`gentok.data.streams`), endless, each process and loader worker reading its own shards, resumable.
Every form goes through the one resolution policy of `gentok.data.views`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gentok.data.datasets import HeldOutViews, MultiScaleCrops, photo_data
from gentok.data.records import FORMATS, detect_format, find_dataset
from gentok.data.streams import ImageStream, stream_image_data
from gentok.data.views import SCALES, TrainViews


def default_image_data(size: int, data: str | None = None, train_length: int = 100_000, eval_length: int = 64,
                       seed: int = 0, scales: Sequence[str] | Mapping[str, float] | str = SCALES,
                       eval_scales: Sequence[str] | str = SCALES, channel_shuffle: float = 0.0,
                       color_jitter: float = 0.0, rotate: float = 0.0, hue: float = 0.0, data_format: str | None = None,
                       shuffle_buffer: int = 1000, num_workers: int | None = None,
                       labels: bool = False) -> tuple[MultiScaleCrops | ImageStream, HeldOutViews]:
    """(train, held-out) datasets of (3, size, size) images in [0, 1].

    Args:
        size: the model's image size.
        data: None for the bundled photographs, or a folder, ImageFolder tree, tar shards (paths, a folder or a
            brace/glob pattern), Parquet files or a `save_to_disk` directory.
        train_length: views of the in-memory forms (streams are endless).
        eval_length: held-out views (streams: at most this many held-out images, one centred view each).
        seed: the data seed; the held-out set uses its own stream derived from it.
        scales / channel_shuffle / color_jitter / rotate / hue: the training views (`gentok.data.views.TrainViews`).
        eval_scales: the held-out views' scales of the in-memory forms (streams: the centred view).
        data_format: one of `gentok.data.records.FORMATS`, or None to detect it.
        shuffle_buffer / num_workers / labels: for streams (`ImageStream`); labels need a labelled form.
    """
    if data_format is not None and data_format not in FORMATS:
        raise ValueError(f"data format must be one of {', '.join(FORMATS)}, got {data_format!r}")
    form = data_format or (detect_format(data) if data else "folder")
    if data is None or form == "folder":
        if labels:
            raise ValueError("class labels need an ImageFolder tree, tar shards with .cls files, Parquet or a saved "
                             "`datasets` directory with a label column; a plain folder has none")
        return photo_data(size, data, train_length, eval_length, seed, scales, eval_scales, channel_shuffle,
                          color_jitter, rotate, hue)
    views = TrainViews(size, scales, True, channel_shuffle, color_jitter, rotate, hue)
    return stream_image_data(find_dataset(data, form), views, eval_length, seed, shuffle_buffer, num_workers, labels)


def image_data_form(data: str | None, data_format: str | None = None) -> str:
    """The form `default_image_data` reads `data` as: 'bundled', or one of `FORMATS`."""
    return "bundled" if data is None else (data_format or detect_format(data))
