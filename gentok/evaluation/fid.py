"""FID, Inception Score and precision/recall of image sets, the numbers image papers report: rFID (a tokenizer's
reconstructions against its inputs: `reconstruction_fid` over a folder, batch by batch), gFID (a generator's samples
against held-out images or a reference statistics file such as ADM's `VIRTUAL_imagenet256_labeled.npz`), and
folders of images against each other (`fid_of_folders`); `gentok fid` wraps the last two.

The feature network is an argument: `inception_features` builds the Inception network from weights the user gives
(or explicitly asks to download); tests pass a small network of their own. The metrics themselves are
`gentok.metrics.inception.DistributionMetrics`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from gentok.data.photos import image_paths, load_image
from gentok.data.views import eval_view
from gentok.metrics.distribution import FeatureStats
from gentok.metrics.inception import DistributionMetrics, InceptionFeatures


def inception_features(weights: str | os.PathLike | None = None, download: bool = False,
                       device: torch.device | str | None = None) -> nn.Module | None:
    """The Inception network on `weights` (a local file) or downloaded when `download`; None when neither is given
    (the distribution metrics are then skipped: nothing is fetched by default)."""
    if weights is None and not download:
        return None
    net = InceptionFeatures(weights, download=download).eval()
    return net.to(device) if device is not None else net


def _device(net: nn.Module) -> torch.device:
    p = next(net.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _batches(images: Tensor | Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    if isinstance(images, Tensor):
        for i in range(0, len(images), batch_size):
            yield images[i:i + batch_size]
    else:
        yield from images


@torch.no_grad()
def distribution_report(features: nn.Module, fake: Tensor | Iterable[Tensor],
                        real: Tensor | Iterable[Tensor] | None = None, reference: FeatureStats | None = None,
                        batch_size: int = 64) -> dict[str, float]:
    """FID (and IS when the network gives logits, precision/recall when real images are fed) of `fake` images
    against `real` images or `reference` statistics (exactly one of the two).

    Args:
        features: images (b, 3, H, W) in [0, 1] -> features (b, d), or {"features", "logits"}.
        fake / real: image tensors (n, 3, H, W) in [0, 1], or iterables of such batches.
        reference: statistics loaded from an `.npz` (`FeatureStats.load`).
    Returns:
        {"fid", "n_fake", "n_real", ["inception_score", "inception_score_std"], ["precision", "recall"]}.
    """
    if (real is None) == (reference is None):
        raise ValueError("pass either real images or reference statistics to compare against")
    return _report_with_stats(features, fake, real, reference, batch_size)[0]


def folder_batches(folder: str | os.PathLike, size: int, batch_size: int = 64,
                   skipped: list[str] | None = None) -> Iterator[Tensor]:
    """Batches (b, 3, size, size) of the images under `folder` (recursively, sorted by path), each through the
    evaluation view (shorter side to `size`, centre crop: ADM's reference batches are made the same way). Unreadable
    files are skipped (their paths appended to `skipped`), never fatal."""
    paths = image_paths(folder)
    batch = []
    for p in paths:
        try:
            batch.append(eval_view(load_image(p), size))
        except ValueError as e:
            if skipped is not None:
                skipped.append(str(p))
            print(f"gentok: skipped {e}", file=sys.stderr)
            continue
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def fid_of_folders(generated: str | os.PathLike, features: nn.Module, ref: str | os.PathLike | None = None,
                   size: int = 256, batch_size: int = 64, save_stats: str | os.PathLike | None = None) -> dict:
    """What `gentok fid` prints: the images under `generated` against `ref` (a folder of images, or an `.npz` of
    reference statistics: ours or an ADM reference batch), through `features`.

    Args:
        size: the side every image is brought to (evaluation view) before the network.
        save_stats: write the feature statistics of `generated` to this `.npz` (a reference file for later runs).
    Returns:
        the `distribution_report` numbers plus `skipped` (unreadable files) and, with `save_stats`, its path; with
        `ref` None only the statistics are computed (and IS when the network gives logits).
    """
    skipped: list[str] = []
    fake = folder_batches(generated, size, batch_size, skipped)
    if ref is None:
        if save_stats is None:
            raise ValueError("nothing to do: pass a reference (a folder or an .npz) and/or a file to save the "
                             "statistics to")
        metrics = DistributionMetrics(features)
        for batch in fake:
            metrics.update(batch.to(_device(features)), real=False)
        out = {"n": metrics.fake.n}
        if metrics._logits and metrics.fake.n >= 2:
            out.update({k: v for k, v in metrics.compute().items() if k.startswith("inception_score")})
        stats = metrics.fake
    else:
        reference, real = None, None
        if Path(ref).is_file():
            reference = FeatureStats.load(ref)
        elif Path(ref).is_dir():
            real = folder_batches(ref, size, batch_size, skipped)
        else:
            raise ValueError(f"reference {ref} is neither a folder of images nor an .npz statistics file")
        out, stats = _report_with_stats(features, fake, real, reference, batch_size)
    if save_stats is not None:
        out["saved_stats"] = str(stats.save(save_stats))
    out["skipped"] = len(skipped)
    return out


@torch.no_grad()
def _report_with_stats(features, fake, real, reference, batch_size) -> tuple[dict, FeatureStats]:
    """`distribution_report`, also returning the statistics of the fake side (to save)."""
    metrics = DistributionMetrics(features, reference=reference)
    device = _device(features)
    if real is not None:
        for batch in _batches(real, batch_size):
            metrics.update(batch.to(device), real=True)
    for batch in _batches(fake, batch_size):
        metrics.update(batch.to(device), real=False)
    if metrics.fake.n < 2 or (reference is None and metrics.real.n < 2):
        raise ValueError(f"FID needs at least 2 images on each side, got {metrics.fake.n} and "
                         f"{metrics.real.n if reference is None else reference.n}")
    return metrics.compute(), metrics.fake


@torch.no_grad()
def reconstruction_fid(tokenizer, folder: str | os.PathLike, features: nn.Module, batch_size: int = 64,
                       save_stats: str | os.PathLike | None = None) -> dict:
    """rFID of `tokenizer` on the images under `folder` (each through the evaluation view at the tokenizer's
    `image_size`): its reconstructions decode(encode(x)) against the images, batch by batch (memory bounded by one
    batch, so all 50k ImageNet validation images can be measured). `save_stats`: write the statistics of the images
    themselves (a reference file). Returns `distribution_report`'s numbers with `fid` renamed `rfid`, and `skipped`."""
    size = getattr(getattr(tokenizer, "config", None), "image_size", None)
    if size is None:
        raise ValueError(f"rFID needs an image tokenizer (a config with image_size), got {type(tokenizer).__name__}")
    tokenizer.eval()
    p = next(tokenizer.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    skipped: list[str] = []
    metrics = DistributionMetrics(features)
    for batch in folder_batches(folder, size, batch_size, skipped):
        recon = tokenizer.decode(tokenizer.encode(batch.to(device))).clamp(0, 1)
        metrics.update(batch.to(_device(features)), real=True)
        metrics.update(recon.to(_device(features)), real=False)
    if metrics.fake.n < 2:
        raise ValueError(f"rFID needs at least 2 images, got {metrics.fake.n} under {folder}")
    out = metrics.compute()
    out = {"rfid": out.pop("fid"), **out, "skipped": len(skipped)}
    if save_stats is not None:
        out["saved_stats"] = str(metrics.real.save(save_stats))
    return out
