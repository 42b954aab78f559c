"""FID / Inception Score / precision-recall / LPIPS, offline, on a small feature network of our own: against
torchmetrics on the same features and against direct NumPy/SciPy computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from gentok.metrics import FeatureStats, fid, frechet_distance_from_stats, inception_score, precision_recall
from gentok.metrics.inception import DistributionMetrics, InceptionFeatures, reference_stats
from gentok.metrics.lpips import LPIPS, lpips_from_features


class TinyFeatures(nn.Module):
    """A fixed random conv net: images (b, 3, H, W) -> 24-d features (and 10 logits)."""

    num_features = 24

    def __init__(self, logits: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 24, 5, stride=2)
        self.head = nn.Linear(24, 10)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.3
        self.logits = logits

    def forward(self, x):
        f = torch.tanh(self.conv(x.float())).mean((2, 3))
        return {"features": f, "logits": self.head(f)} if self.logits else f


def _images(seed, n=40, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 16, 16, generator=g) * 0.8 + shift).clamp(0, 1)


def _numpy_fid(a, b):
    a, b = a.double().numpy(), b.double().numpy()
    m1, m2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))


def test_fid_matches_torchmetrics_and_numpy():
    from torchmetrics.image.fid import FrechetInceptionDistance

    net = TinyFeatures()
    real, fake = _images(0), _images(1, shift=0.15)
    tm = FrechetInceptionDistance(feature=net, normalize=True)
    m = DistributionMetrics(net)
    for half in (slice(0, 20), slice(20, 40)):  # batches accumulate
        tm.update(real[half], real=True)
        tm.update(fake[half], real=False)
        m.update(real[half], real=True)
        m.update(fake[half], real=False)
    ours = m.compute()["fid"]
    with torch.no_grad():
        direct = _numpy_fid(net(real), net(fake))
    assert ours == pytest.approx(float(tm.compute()), abs=1e-5)
    assert ours == pytest.approx(direct, abs=1e-8)
    assert ours > 0.01  # the two sets differ: the test can fail


def test_fid_of_a_set_with_itself_is_zero_and_stats_round_trip(tmp_path):
    f = torch.randn(200, 8, generator=torch.Generator().manual_seed(3))
    s = FeatureStats.from_features(f)
    assert fid(s, FeatureStats.from_features(f)) == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(s.sigma, np.cov(f.double().numpy(), rowvar=False), atol=1e-10)
    s2 = FeatureStats.load(s.save(tmp_path / "ref.npz"))
    np.testing.assert_allclose(s2.mu, s.mu)
    np.testing.assert_allclose(s2.sigma, s.sigma)
    assert s2.n == 200


def test_adm_reference_batch_layout_is_accepted(tmp_path):
    """ADM's VIRTUAL_imagenet256_labeled.npz holds arr_0 (images) beside mu/sigma (and spatial mu_s/sigma_s)."""
    mu, sigma = np.arange(4.0), np.eye(4) * 2
    np.savez(tmp_path / "adm.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8), mu=mu, sigma=sigma,
             mu_s=np.zeros(3), sigma_s=np.eye(3))
    ref = FeatureStats.load(tmp_path / "adm.npz")
    np.testing.assert_array_equal(ref.mu, mu)
    assert frechet_distance_from_stats(ref.mu, ref.sigma, mu + 1, sigma) == pytest.approx(4.0)
    np.savez(tmp_path / "images_only.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="reference_stats"):
        FeatureStats.load(tmp_path / "images_only.npz")
    with pytest.raises(ValueError, match="does not exist"):
        FeatureStats.load(tmp_path / "missing.npz")


def test_gfid_against_saved_reference_equals_fid_against_the_images(tmp_path):
    net = TinyFeatures()
    real, fake = _images(5), _images(6, shift=0.1)
    path = reference_stats([real[:25], real[25:]], net).save(tmp_path / "ref.npz")
    with_ref = DistributionMetrics(net, reference=FeatureStats.load(path))
    with_ref.update(fake, real=False)
    both = DistributionMetrics(net)
    both.update(real, real=True)
    both.update(fake, real=False)
    assert with_ref.compute()["fid"] == pytest.approx(both.compute()["fid"], abs=1e-9)
    with pytest.raises(ValueError, match="only generated"):
        with_ref.update(real, real=True)


def test_inception_score_matches_torchmetrics_and_direct():
    from torchmetrics.image.inception import InceptionScore

    logits = torch.randn(60, 10, generator=torch.Generator().manual_seed(1)) * 2

    class Logits(nn.Module):
        def forward(self, x):
            return x

    tm = InceptionScore(feature=Logits(), splits=1)
    tm.update(logits)
    mean, std = inception_score(logits, splits=1)
    assert mean == pytest.approx(float(tm.compute()[0]), abs=1e-5) and std == 0
    p = logits.double().softmax(1).numpy()
    direct = [np.exp((q * (np.log(q) - np.log(q.mean(0, keepdims=True)))).sum(1).mean()) for q in np.split(p, 3)]
    assert inception_score(logits, splits=3) == pytest.approx((np.mean(direct), np.std(direct)))
    assert inception_score(torch.zeros(30, 10), splits=3)[0] == pytest.approx(1.0)  # uniform predictions score 1


def test_precision_recall_against_brute_force():
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(50, 5, generator=g), torch.randn(40, 5, generator=g) * 0.8 + 0.8
    out = precision_recall(real, fake, k=3, batch=7)

    def brute(ref, query, k):
        d_ref = np.linalg.norm(ref[:, None] - ref[None], axis=-1)
        radii = np.sort(d_ref, axis=1)[:, k]
        d = np.linalg.norm(query[:, None] - ref[None], axis=-1)
        return float((d <= radii[None]).any(1).mean())

    r, f = real.double().numpy(), fake.double().numpy()
    assert out["precision"] == pytest.approx(brute(r, f, 3))
    assert out["recall"] == pytest.approx(brute(f, r, 3))
    assert 0 < out["precision"] < 1 and 0 < out["recall"] < 1
    same = precision_recall(real, real, k=3)
    assert same == {"precision": 1.0, "recall": 1.0}


def test_metrics_report_is_and_precision_recall_with_logits():
    m = DistributionMetrics(TinyFeatures(logits=True), splits=2)
    m.update(_images(7), real=True)
    m.update(_images(8, shift=0.2), real=False)
    out = m.compute()
    assert {"fid", "inception_score", "precision", "recall"} <= set(out)
    assert out["inception_score"] >= 1.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        FeatureStats().update(torch.tensor([[float("nan"), 1.0]]))
    s = FeatureStats().update(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="4-d"):
        s.update(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats().update(torch.zeros(1, 4)).sigma
    with pytest.raises(ValueError, match="different sizes"):
        frechet_distance_from_stats(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="never fetches"):
        InceptionFeatures()
    with pytest.raises(ValueError, match="does not exist"):
        InceptionFeatures(weights="/no/such/pt_inception.pth")
    with pytest.raises(ValueError, match="never fetches"):
        LPIPS()


def test_lpips_formula_against_direct_computation():
    g = torch.Generator().manual_seed(4)
    fx = [torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 5, 2, 2, generator=g)]
    fy = [torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 5, 2, 2, generator=g)]
    lin = [torch.rand(3, generator=g), torch.rand(5, generator=g)]
    ours = lpips_from_features(fx, fy, lin)
    direct = np.zeros(2)
    for a, b, w in zip(fx, fy, lin):
        a, b, w = a.double().numpy(), b.double().numpy(), w.double().numpy()
        a = a / (np.sqrt((a ** 2).sum(1, keepdims=True)) + 1e-10)
        b = b / (np.sqrt((b ** 2).sum(1, keepdims=True)) + 1e-10)
        direct += (((a - b) ** 2) * w[None, :, None, None]).sum(1).mean((1, 2))
    np.testing.assert_allclose(ours.double().numpy(), direct, rtol=1e-5)
    assert torch.allclose(lpips_from_features(fx, fx, lin), torch.zeros(2))
