"""Training losses shared by recipes. The perceptual term needs weights on disk and is never downloaded."""

from __future__ import annotations

import torch

from gentok.metrics import VisionFeatures


def perceptual_loss_fn(weights_dir: str, weight: float = 0.1):
    """A `fit` loss: the tokenizer's own loss plus `weight` x squared feature distance in a local vision model."""
    feats = VisionFeatures(weights_dir)

    def loss_fn(model, batch):
        out = model(batch)
        feats.to(out.recon.device)
        with torch.no_grad():
            target = feats(batch)
        dist = (feats(out.recon.clamp(0, 1)) - target).pow(2).mean()
        return out.loss + weight * dist, {**out.metrics, "perceptual": dist.detach()}

    return loss_fn
