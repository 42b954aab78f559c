"""Ranking metrics for next-item prediction under full ranking over the whole catalog.

A target's rank counts every item scoring at least as high as it (the target included), so ties are resolved
against the model: a model that gives every item the same score ranks every target last, never first. Excluded
(already-seen) items cannot outrank the target. Metrics are per user; `bootstrap_ci` resamples users.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

KS = (5, 10, 20)


def target_ranks(scores: Tensor, targets: Tensor, exclude: Tensor | None = None) -> Tensor:
    """1-based rank of each target. scores (b, N) float, targets (b,) long, exclude (b, N) bool (True = removed
    from the ranking; the target itself is never removed). Returns (b,) long."""
    if scores.ndim != 2 or targets.shape != scores.shape[:1]:
        raise ValueError(f"expected scores (b, N) and targets (b,), got {tuple(scores.shape)} and {tuple(targets.shape)}")
    scores = scores.float()
    target_score = scores.gather(1, targets[:, None])
    beats = scores >= target_score
    if exclude is not None:
        keep_target = torch.zeros_like(exclude).scatter_(1, targets[:, None], True)
        beats &= ~(exclude & ~keep_target)
    # a NaN score can never be trusted to rank the target: count it against the model
    beats |= torch.isnan(scores)
    return beats.sum(1)


def metrics_from_ranks(ranks, ks=KS) -> dict[str, np.ndarray]:
    """Per-user Recall@k (hit rate, one target per user), NDCG@k and MRR@k from 1-based ranks."""
    r = np.asarray(ranks, dtype=np.float64)
    out = {}
    for k in ks:
        hit = r <= k
        out[f"recall@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)
        out[f"mrr@{k}"] = np.where(hit, 1.0 / r, 0.0)
    return out


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over users."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_boot, values.size))
    means = values[idx].mean(1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def paired_ratio_ci(values: np.ndarray, reference: np.ndarray, n_boot: int = 1000, alpha: float = 0.05,
                    seed: int = 0) -> dict:
    """The ratio of two models' means over the same users, mean(values) / mean(reference), with a percentile
    bootstrap CI that resamples users once for both (paired: the users' shared difficulty cancels, so the CI is
    much narrower than the two separate CIs suggest). Returns {"ratio", "ci_low", "ci_high"}."""
    a, b = np.asarray(values, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not a.size:
        raise ValueError(f"need two per-user arrays of one non-zero length, got shapes {a.shape} and {b.shape}")
    if b.mean() <= 0:
        raise ValueError("the reference mean must be > 0 for a ratio")
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_boot, a.size))
    ratios = a[idx].mean(1) / np.maximum(b[idx].mean(1), 1e-300)
    return {"ratio": float(a.mean() / b.mean()), "ci_low": float(np.quantile(ratios, alpha / 2)),
            "ci_high": float(np.quantile(ratios, 1 - alpha / 2))}


def summarize(per_user: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0) -> dict[str, dict]:
    """{metric: {"mean", "ci_low", "ci_high"}} from per-user arrays."""
    out = {}
    for name, v in per_user.items():
        lo, hi = bootstrap_ci(v, n_boot=n_boot, seed=seed)
        out[name] = {"mean": float(np.mean(v)) if len(v) else float("nan"), "ci_low": lo, "ci_high": hi}
    return out


def format_table(rows: dict[str, dict[str, dict]], metrics=("recall@5", "recall@10", "ndcg@5", "ndcg@10")) -> str:
    """A plain-text table: one row per (name), columns `mean [ci_low, ci_high]`."""
    head = f"{'':<22}" + "".join(f"{m:>24}" for m in metrics)
    lines = [head]
    for name, summary in rows.items():
        cells = "".join(
            f"{summary[m]['mean']:>8.4f} [{summary[m]['ci_low']:.3f},{summary[m]['ci_high']:.3f}]" for m in metrics
        )
        lines.append(f"{name:<22}{cells}")
    return "\n".join(lines)
