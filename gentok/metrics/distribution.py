"""The distribution metrics image papers report: FID (rFID on reconstructions, gFID on samples), Inception Score and
precision/recall (Kynkaanniemi et al. 2019), computed on features of a network the caller passes.

The feature network is a parameter, so the same code runs on the Inception weights the user provides
(`gentok.metrics.inception`) and, in the tests, on a small network of our own. Statistics accumulate in float64 as
running sums (a 50k-sample gFID never holds its features in memory) and save to / load from `.npz` files with `mu`
and `sigma`, which is also the layout of the ADM reference batches (`VIRTUAL_imagenet256_labeled.npz`) that TiTok
and RAR report gFID against.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gentok.files import atomic_write_bytes


class FeatureStats:
    """Running mean and covariance of feature vectors (n, d), in float64."""

    def __init__(self, dim: int | None = None):
        self.dim, self.n = dim, 0
        self._sum = self._outer = None
        self._mu = self._sigma = None  # set when loaded from a file (no running sums there)

    def update(self, features: Tensor) -> "FeatureStats":
        """Add a batch of features (n, d)."""
        if self._mu is not None:
            raise ValueError("these statistics were loaded from a file; they cannot take more features")
        f = torch.as_tensor(features).detach().double().cpu()
        if f.dim() != 2 or f.shape[0] == 0:
            raise ValueError(f"expected features of shape (n, d) with n >= 1, got {tuple(f.shape)}")
        if not torch.isfinite(f).all():
            raise ValueError("features contain NaN or infinity (check the images fed to the feature network)")
        if self.dim is None:
            self.dim = f.shape[1]
        if f.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim}-d features, got {f.shape[1]}-d")
        if self._sum is None:
            self._sum = torch.zeros(self.dim, dtype=torch.float64)
            self._outer = torch.zeros(self.dim, self.dim, dtype=torch.float64)
        self._sum += f.sum(0)
        self._outer += f.T @ f
        self.n += f.shape[0]
        return self

    @classmethod
    def from_features(cls, features: Tensor) -> "FeatureStats":
        return cls().update(features)

    @property
    def mu(self) -> np.ndarray:
        if self._mu is not None:
            return self._mu
        self._need(1)
        return (self._sum / self.n).numpy()

    @property
    def sigma(self) -> np.ndarray:
        """Unbiased covariance (divides by n - 1, as numpy.cov, pytorch-fid and torchmetrics do)."""
        if self._sigma is not None:
            return self._sigma
        self._need(2)
        mu = self._sum / self.n
        return ((self._outer - self.n * torch.outer(mu, mu)) / (self.n - 1)).numpy()

    def _need(self, k: int) -> None:
        if self.n < k:
            raise ValueError(f"statistics need at least {k} feature vectors, got {self.n}")

    def save(self, path: str | os.PathLike) -> Path:
        """Write `mu`, `sigma` and `n` to an `.npz` file (atomically)."""
        buf = io.BytesIO()
        np.savez(buf, mu=self.mu, sigma=self.sigma, n=np.int64(self.n))
        atomic_write_bytes(path, buf.getvalue())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureStats":
        """Statistics from an `.npz` with `mu` (d,) and `sigma` (d, d): ours, or an ADM reference batch."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"reference statistics file {path} does not exist")
        try:
            data = np.load(path, allow_pickle=False)
            keys = set(data.files)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} is not a readable .npz file ({e})") from None
        if not {"mu", "sigma"} <= keys:
            hint = (" (it holds images: compute their statistics with gentok.metrics.reference_stats)"
                    if "arr_0" in keys else "")
            raise ValueError(f"{path} has no 'mu' and 'sigma' arrays (found {sorted(keys)}){hint}")
        mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"{path}: expected mu (d,) and sigma (d, d), got {mu.shape} and {sigma.shape}")
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise ValueError(f"{path}: mu or sigma contains NaN or infinity")
        out = cls(mu.shape[0])
        out._mu, out._sigma = mu, sigma
        out.n = int(data["n"]) if "n" in keys else 0
        return out


def frechet_distance_from_stats(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64 (scipy's sqrtm, as pytorch-fid and ADM's
    evaluator compute it; a near-singular product gets `eps` on the diagonals, as they do)."""
    from scipy import linalg

    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"statistics of different sizes: {mu1.shape} vs {mu2.shape} (different feature layers?)")
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fid(a: FeatureStats, b: FeatureStats) -> float:
    """Frechet distance between two sets of feature statistics (FID when the features are Inception pool3)."""
    return frechet_distance_from_stats(a.mu, a.sigma, b.mu, b.sigma)


def inception_score(logits: Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))) of classifier logits (n, classes): mean and std over `splits`
    consecutive groups (as the original implementation and torch-fidelity split)."""
    logits = torch.as_tensor(logits).double()
    if logits.dim() != 2 or logits.shape[0] < splits:
        raise ValueError(f"expected logits (n, classes) with n >= splits={splits}, got {tuple(logits.shape)}")
    p = logits.softmax(1)
    scores = []
    for part in p.chunk(splits):
        py = part.mean(0, keepdim=True)
        kl = (part * (part.clamp_min(1e-30).log() - py.clamp_min(1e-30).log())).sum(1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))


def _kth_radius(x: Tensor, k: int, batch: int) -> Tensor:
    """Distance of each row of x to its k-th nearest other row."""
    out = []
    for i in range(0, x.shape[0], batch):
        d = torch.cdist(x[i:i + batch], x)
        out.append(d.kthvalue(k + 1, dim=1).values)  # +1: the row itself at distance 0
    return torch.cat(out)


def _covered(query: Tensor, ref: Tensor, radii: Tensor, batch: int) -> Tensor:
    """For each query row: is it inside some ball (ref_i, radii_i)?"""
    out = []
    for i in range(0, query.shape[0], batch):
        d = torch.cdist(query[i:i + batch], ref)
        out.append((d <= radii[None]).any(1))
    return torch.cat(out)


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, batch: int = 1024) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of feature sets (n, d): precision is the share of
    fake samples inside the k-NN balls of the real ones, recall the share of real samples inside the fake ones'."""
    real, fake = torch.as_tensor(real).double(), torch.as_tensor(fake).double()
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected two feature sets (n, d) of one width, got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples in each set")
    r_real, r_fake = _kth_radius(real, k, batch), _kth_radius(fake, k, batch)
    return {"precision": float(_covered(fake, real, r_real, batch).double().mean()),
            "recall": float(_covered(real, fake, r_fake, batch).double().mean())}
