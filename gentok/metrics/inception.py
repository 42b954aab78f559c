"""Inception features for rFID / gFID / Inception Score, and the accumulator that turns image batches into those
numbers.

The network is the TF-compatible Inception v3 port of torch-fidelity (the one behind torchmetrics' FID and the numbers
TiTok, RAR and the ADM evaluator report), through `torchmetrics`. Its weights are never fetched by default: pass the
local file (`pt_inception-2015-12-05-6726825d.pth`) or ask for the download explicitly (`download=True`,
`--download-inception`). torch-fidelity needs torchvision: `pip install "gentok[metrics]"` where a torchvision build
matches the installed torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from gentok.metrics.distribution import FeatureStats, fid, inception_score, precision_recall

INCEPTION_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"


class InceptionFeatures(nn.Module):
    """Images (b, 3, H, W) in [0, 1] -> {"features": (b, 2048) pool3, "logits": (b, 1008)}."""

    num_features = 2048

    def __init__(self, weights: str | os.PathLike | None = None, download: bool = False):
        super().__init__()
        if weights is None and not download:
            raise ValueError(f"rFID/gFID need Inception weights: pass a local file ({INCEPTION_WEIGHTS}) or ask for "
                             "the download explicitly (download=True / --download-inception); gentok never fetches "
                             "them by default")
        if weights is not None and not Path(weights).is_file():
            raise ValueError(f"Inception weights file {weights} does not exist")
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
        except (ImportError, ModuleNotFoundError) as e:
            raise ImportError("Inception features need torch-fidelity (and torchvision): pip install "
                              f"'gentok[metrics]' ({e})") from None
        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=None if weights is None else str(weights))

    @torch.no_grad()
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = (images.float().clamp(0, 1) * 255).round().to(torch.uint8)  # the network takes uint8 as TF did
        features, logits = self.net(x)
        return {"features": features.reshape(x.shape[0], -1), "logits": logits.reshape(x.shape[0], -1)}


def _outputs(net: nn.Module, images: Tensor) -> tuple[Tensor, Tensor | None]:
    out = net(images)
    if isinstance(out, dict):
        return out["features"], out.get("logits")
    return out, None


class DistributionMetrics:
    """Feeds real and generated (or reconstructed) image batches through a feature network and reports FID,
    Inception Score (when the network gives logits) and precision/recall.

    `reference`: statistics of the real set loaded from a file (gFID against an ADM batch); then only generated
    images are fed, and precision/recall (which need the real features themselves) are skipped. `keep`: how many
    feature vectors per side are kept for precision/recall (10k as the ADM evaluator does)."""

    def __init__(self, features: nn.Module, reference: FeatureStats | None = None, keep: int = 10_000,
                 splits: int = 10, k: int = 3):
        self.net, self.reference, self.keep, self.splits, self.k = features, reference, keep, splits, k
        self.real, self.fake = FeatureStats(), FeatureStats()
        self._kept: dict[bool, list[Tensor]] = {True: [], False: []}
        self._logits: list[Tensor] = []

    @torch.no_grad()
    def update(self, images: Tensor, real: bool) -> None:
        """A batch of images (b, 3, H, W) in [0, 1]."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (b, 3, H, W), got {tuple(images.shape)}")
        if real and self.reference is not None:
            raise ValueError("reference statistics were given: feed only generated images")
        feats, logits = _outputs(self.net, images)
        (self.real if real else self.fake).update(feats)
        kept = self._kept[real]
        room = self.keep - sum(len(t) for t in kept)
        if room > 0:
            kept.append(feats[:room].double().cpu())
        if logits is not None and not real:
            self._logits.append(logits.double().cpu())

    def compute(self) -> dict[str, float]:
        ref = self.reference if self.reference is not None else self.real
        out = {"fid": fid(ref, self.fake), "n_fake": self.fake.n, "n_real": ref.n}
        if self._logits:
            logits = torch.cat(self._logits)
            splits = min(self.splits, logits.shape[0])
            out["inception_score"], out["inception_score_std"] = inception_score(logits, splits)
        if self.reference is None and all(self._kept.values()):
            real, fake = torch.cat(self._kept[True]), torch.cat(self._kept[False])
            if min(len(real), len(fake)) > self.k:
                out.update(precision_recall(real, fake, k=self.k))
        return out


@torch.no_grad()
def reference_stats(images, features: nn.Module) -> FeatureStats:
    """Statistics of an iterable of image batches (b, 3, H, W) in [0, 1], to save as a reference `.npz`."""
    stats = FeatureStats()
    for batch in images:
        stats.update(_outputs(features, batch)[0])
    return stats
