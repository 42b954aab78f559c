"""A popularity prior blended with a recommender's scores, for catalogs a model barely knows: a new catalog it never
trained on (zero-shot) and items that had no interactions when it trained (cold start).

    score(u, i) = log(1 + count_i) + weight * z_u(model)_i                         warm items (all, without a cold set)
    score(u, i) = log(1 + count_i) + cold_weight * z_u(model)_i + cold_bonus       cold items

`count_i` is how often item i occurs in the interactions a deployed system has when it scores: the training
sequences (`recsys.models.popularity.train_counts`) or the histories being scored (`history_counts`), never the
targets. `z_u` is the model's scores for user u standardized over the catalog (mean 0, std 1 per user), so one weight
means the same for any model and any catalog: that is what lets a weight chosen on the source catalog's validation
cases be applied unchanged to a catalog the model never saw. `weight` 0 is popularity exactly; a huge `weight` is the
model's ranking (popularity only breaks its ties). Warm items are ordered by `weight` alone, cold items by
`cold_weight` alone; `cold_bonus` only moves the cold items as a block against the warm ones.

`calibrate_weight` and `calibrate_cold_bonus` (over `bonus_grid`) choose these on validation cases (the only cases
they are given); `BlendCalibration` saves the choice as JSON; `PopularityBlend` is a `Recommender` that scores with it.
A second model-free score source (item co-occurrence, which ranks cold items too) enters as the model score:
`mix_scores` with a share chosen by `calibrate_share`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from gentok.files import atomic_write_json
from recsys.metrics import metrics_from_ranks, target_ranks
from recsys.models.base import Recommender, seen_mask

FORMAT_VERSION = 1
# model weights tried on validation: 0 (popularity) to 8 (nearly the model alone), denser near the small values
# where a weak model's share is decided
WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)
# shares of a second score source tried by `calibrate_share` (0: the model alone, 1: the other source alone)
SHARES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def standardize(scores: Tensor) -> Tensor:
    """(b, N) scores -> (b, N) float64, each row's finite entries shifted and scaled to mean 0, std 1 (a constant row
    becomes 0); -inf (an item the model cannot rank) stays -inf. NaN or +inf raise `ValueError`."""
    s = torch.as_tensor(scores).double()
    if s.ndim != 2:
        raise ValueError(f"expected model scores (b, N), got shape {tuple(s.shape)}")
    if bool(torch.isnan(s).any()) or bool((s == float("inf")).any()):
        raise ValueError("model scores hold NaN or +inf: a blend cannot rank them")
    finite = torch.isfinite(s)
    n = finite.sum(1, keepdim=True).clamp_min(1)
    x = torch.where(finite, s, torch.zeros_like(s))
    mean = x.sum(1, keepdim=True) / n
    var = (torch.where(finite, s - mean, torch.zeros_like(s)) ** 2).sum(1, keepdim=True) / n
    std = var.sqrt()
    z = torch.where(std > 0, (x - mean) / std.clamp_min(1e-300), torch.zeros_like(s))
    return z.masked_fill(~finite, float("-inf"))


def _check_counts(counts, num_items: int) -> Tensor:
    c = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
    if c.shape != (num_items,) or not bool(torch.isfinite(c).all()) or bool((c < 0).any()):
        raise ValueError(f"counts must be ({num_items},) finite non-negative item counts, got shape {tuple(c.shape)}")
    return c


def _check_cold(cold, num_items: int) -> Tensor | None:
    if cold is None:
        return None
    m = torch.as_tensor(np.asarray(cold))
    if m.dtype != torch.bool or m.shape != (num_items,):
        raise ValueError(f"cold must be a ({num_items},) bool mask of the cold items, got {m.dtype} "
                         f"{tuple(m.shape)}")
    return m


def _check_weight(value: float, what: str) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def blend_scores(model_scores: Tensor, counts, weight: float, cold=None, cold_weight: float | None = None,
                 cold_bonus: float = 0.0) -> Tensor:
    """The blend of the module docstring. model_scores (b, N), counts (N,) >= 0, cold (N,) bool or None. Returns
    (b, N) float64. A weight of exactly 0 leaves the model out (its scores are not consulted, so even -inf ones)."""
    s = torch.as_tensor(model_scores)
    if s.ndim != 2:
        raise ValueError(f"expected model scores (b, N), got shape {tuple(s.shape)}")
    prior = torch.log1p(_check_counts(counts, s.shape[1]))[None].expand(s.shape[0], -1)
    weight = _check_weight(weight, "weight")
    cold = _check_cold(cold, s.shape[1])
    cold_weight = weight if cold_weight is None else _check_weight(cold_weight, "cold_weight")
    if not math.isfinite(cold_bonus):
        raise ValueError(f"cold_bonus must be finite, got {cold_bonus!r}")
    z = standardize(s) if (weight > 0 or (cold is not None and cold_weight > 0)) else None
    warm = prior + weight * z if weight > 0 else prior.clone()
    if cold is None:
        return warm
    c = prior + cold_weight * z if cold_weight > 0 else prior
    return torch.where(cold[None], c + float(cold_bonus), warm)


def target_ranks_of(scores: Tensor, histories: Sequence, targets, items=None) -> np.ndarray:
    """1-based rank of each target among the items a user has not seen, ties counted against the target (as in
    `recsys.metrics`). scores (b, N); `items` (N,) bool ranks among those items only (every target must be one)."""
    t = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    if len(histories) != scores.shape[0] or t.shape != (scores.shape[0],):
        raise ValueError(f"need one history and one target per score row: {scores.shape[0]} rows, {len(histories)} "
                         f"histories, {tuple(t.shape)} targets")
    exclude = seen_mask(histories, scores.shape[1])
    if items is not None:
        items = _check_cold(items, scores.shape[1])
        if not bool(items[t].all()):
            raise ValueError("every target must be one of the items ranked")
        exclude |= ~items[None]
    return target_ranks(scores, t, exclude).numpy()


def _metric(ranks: np.ndarray, metric: str) -> float:
    k = int(metric.split("@")[1]) if "@" in metric else 0
    if not metric.startswith(("recall@", "ndcg@", "mrr@")) or k <= 0:
        raise ValueError(f"metric must be recall@k, ndcg@k or mrr@k, got {metric!r}")
    return float(metrics_from_ranks(ranks, ks=(k,))[metric].mean()) if len(ranks) else 0.0


def calibrate_weight(model_scores: Tensor, counts, histories: Sequence, targets, grid: Sequence[float] = WEIGHTS,
                     metric: str = "ndcg@10", items=None) -> tuple[float, list[list[float]]]:
    """The model weight with the best `metric` on the given (validation) cases, ties to the smaller weight (closer to
    popularity). model_scores (b, N) for histories (b) and targets (b,); `items` (N,) bool ranks among those items
    only (e.g. warm targets among warm items). Returns (weight, [[weight, metric], ...] over `grid`)."""
    if not len(grid):
        raise ValueError("the weight grid is empty")
    curve = []
    for w in sorted(grid):
        ranks = target_ranks_of(blend_scores(model_scores, counts, w), histories, targets, items)
        curve.append([float(w), _metric(ranks, metric)])
    best = max(curve, key=lambda p: (p[1], -p[0]))
    return best[0], curve


def mix_scores(model_scores: Tensor, other_scores: Tensor, share: float, cold=None) -> Tensor:
    """(b, N) float64 `(1 - share) * z(model) + share * z(other)` (z: `standardize`), and `z(other)` alone on the
    `cold` items ((N,) bool or None), which the model never trained on: e.g. a model mixed with
    `recsys.models.cooccurrence` scores. Share 0 keeps warm items in the model's order, 1 in the other's (a source
    with weight 0 is not consulted). The result is a model score for `blend_scores` and the calibrations."""
    m, o = torch.as_tensor(model_scores), torch.as_tensor(other_scores)
    if m.ndim != 2 or m.shape != o.shape:
        raise ValueError(f"expected two (b, N) score matrices of one shape, got {tuple(m.shape)} and {tuple(o.shape)}")
    share = _check_weight(share, "share")
    if share > 1:
        raise ValueError(f"share must lie in [0, 1], got {share}")
    cold = _check_cold(cold, m.shape[1])
    zo = standardize(o)
    mixed = zo if share == 1 else standardize(m) if share == 0 else (1 - share) * standardize(m) + share * zo
    return mixed if cold is None else torch.where(cold[None], zo, mixed)


def calibrate_share(model_scores: Tensor, other_scores: Tensor, histories: Sequence, targets,
                    grid: Sequence[float] = SHARES, metric: str = "ndcg@10", items=None,
                    cold=None) -> tuple[float, list[list[float]]]:
    """The `mix_scores` share with the best `metric` on the given (validation) cases (no prior), ties to the smaller
    share (closer to the model); `items` (N,) bool ranks among those items only, `cold` as in `mix_scores`. Returns
    (share, [[share, metric], ...] over `grid`)."""
    if not len(grid):
        raise ValueError("the share grid is empty")
    curve = []
    for w in sorted(grid):
        ranks = target_ranks_of(mix_scores(model_scores, other_scores, w, cold), histories, targets, items)
        curve.append([float(w), _metric(ranks, metric)])
    best = max(curve, key=lambda p: (p[1], -p[0]))
    return best[0], curve


def _last_finite(v: Tensor) -> Tensor:
    """(b, k) values sorted descending -> (b,) the last finite one per row (-inf where none is)."""
    n = torch.isfinite(v).sum(1)
    return v.gather(1, (n - 1).clamp_min(0)[:, None])[:, 0].masked_fill(n == 0, float("-inf"))


def bonus_grid(model_scores: Tensor, counts, cold, histories: Sequence, weight: float, cold_weight: float,
               k: int = 10, points: int = 33) -> list[float]:
    """Cold bonuses that span every mix of a top-k list, read off the given (validation) cases: per user, the bonus
    at which a first cold item enters the top k (k-th best warm score minus best cold score) and the one at which the
    whole top k is cold (best warm minus k-th best cold); the grid is `points` quantiles of those, plus one bonus
    below them all (no cold item anywhere). A fixed grid would not do: the bonus that matters grows with the weight."""
    cold = _check_cold(cold, torch.as_tensor(model_scores).shape[1])
    s = blend_scores(model_scores, counts, weight, cold, cold_weight, 0.0)
    s = s.masked_fill(seen_mask(histories, s.shape[1]), float("-inf"))
    warm = s.masked_fill(cold[None], float("-inf")).topk(k, dim=1).values
    colds = s.masked_fill(~cold[None], float("-inf")).topk(min(k, int(cold.sum())), dim=1).values
    edges = torch.cat([_last_finite(warm) - colds[:, 0], warm[:, 0] - _last_finite(colds)])
    edges = edges[torch.isfinite(edges)].numpy()
    if not len(edges):
        raise ValueError("no user has both a warm and a cold item left to rank")
    grid = np.quantile(edges, np.linspace(0, 1, points)) + 1e-9  # just past each edge: the cold item wins the tie
    return sorted({round(float(x), 6) for x in grid} | {round(float(edges.min()) - 1.0, 6)})


def calibrate_cold_bonus(model_scores: Tensor, counts, cold, histories: Sequence, targets, weight: float,
                         cold_weight: float, reference_warm: float, max_warm_loss: float = 0.05,
                         grid: Sequence[float] | None = None, k: int = 10,
                         cold_goal: float | None = None) -> tuple[float, list[dict], bool]:
    """The cold bonus with the best cold-target Recall@k among those whose warm-target Recall@k is at least
    `(1 - max_warm_loss) * reference_warm` (e.g. the same model's without cold handling), on the given (validation)
    cases; ties go to the smaller bonus. With `cold_goal` (e.g. a baseline's cold-target Recall@k on these cases),
    the smallest of those bonuses whose cold-target Recall@k reaches it, when one does: the goal at the least cost to
    warm targets, which matters when the scores rank warm items better than the reference (more bonus would trade
    that gain away for cold targets down to the bound). `grid` None: `bonus_grid` of these cases. When no bonus
    keeps warm targets there, the one that loses least is chosen and `feasible` is False. Returns (bonus, curve
    [{bonus, warm, cold, cold_in_top}], feasible)."""
    cold = _check_cold(cold, torch.as_tensor(model_scores).shape[1])
    if cold is None or (grid is not None and not len(grid)) or not 0 <= max_warm_loss < 1:
        raise ValueError("need a cold mask, a non-empty bonus grid and 0 <= max_warm_loss < 1")
    if grid is None:
        grid = bonus_grid(model_scores, counts, cold, histories, weight, cold_weight, k)
    is_cold = cold[torch.as_tensor(np.asarray(targets), dtype=torch.long)].numpy()
    seen = seen_mask(histories, cold.shape[0])
    curve = []
    for b in sorted(grid):
        scores = blend_scores(model_scores, counts, weight, cold, cold_weight, b)
        ranks = target_ranks_of(scores, histories, targets)
        top = scores.masked_fill(seen, float("-inf")).topk(k, dim=1).indices
        curve.append({"bonus": float(b), "warm": _metric(ranks[~is_cold], f"recall@{k}"),
                      "cold": _metric(ranks[is_cold], f"recall@{k}"),
                      "cold_in_top": float(cold[top].float().sum(1).mean())})
    ok = [p for p in curve if p["warm"] >= (1 - max_warm_loss) * reference_warm - 1e-12]
    reach = [p for p in ok if cold_goal is not None and p["cold"] >= cold_goal]
    if reach:
        return min(p["bonus"] for p in reach), curve, True
    if ok:
        return max(ok, key=lambda p: (p["cold"], -p["bonus"]))["bonus"], curve, True
    return max(curve, key=lambda p: (p["warm"], -p["bonus"]))["bonus"], curve, False


@dataclass(frozen=True)
class BlendCalibration:
    """What `PopularityBlend` scores with, and how it was chosen. `cold_weight` None: the same as `weight`."""

    weight: float = 1.0  # model weight of warm items (of every item without a cold set)
    cold_weight: float | None = None  # model weight of cold items
    cold_bonus: float = 0.0  # added to every cold item's score (log-popularity units)
    chosen_on: str = ""  # the cases that chose it, in words (never test cases)
    curves: dict = field(default_factory=dict)  # the validation curves behind the choice

    def __post_init__(self):
        _check_weight(self.weight, "weight")
        if self.cold_weight is not None:
            _check_weight(self.cold_weight, "cold_weight")
        if not isinstance(self.cold_bonus, (int, float)) or not math.isfinite(self.cold_bonus):
            raise ValueError(f"cold_bonus must be a finite number, got {self.cold_bonus!r}")
        if not isinstance(self.curves, dict):
            raise ValueError(f"curves must be a dict, got {type(self.curves).__name__}")

    def save(self, path: str | Path) -> None:
        """Write the calibration as JSON (atomically)."""
        atomic_write_json(Path(path), {"type": "popularity_blend", "format_version": FORMAT_VERSION, **asdict(self)})

    @classmethod
    def load(cls, path: str | Path) -> BlendCalibration:
        """Read a calibration written by `save`; `ValueError` when the file is not one."""
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read a blend calibration from {path}: {e}") from e
        if not isinstance(d, dict) or d.get("type") != "popularity_blend":
            raise ValueError(f"{path} is not a popularity-blend calibration (no type 'popularity_blend')")
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} has format_version {d.get('format_version')!r}; this gentok reads "
                             f"{FORMAT_VERSION}")
        fields = {k: v for k, v in d.items() if k not in ("type", "format_version")}
        unknown = set(fields) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown calibration fields {sorted(unknown)}")
        return cls(**fields)


@torch.no_grad()
def model_scores(model, histories: Sequence, batch_size: int = 64) -> Tensor:
    """(b, N) float32 CPU scores of `model.score_all` for `histories`, in batches (the input of the calibrations)."""
    was = model.training
    model.eval()
    try:
        rows = [model.score_all(histories[s: s + batch_size]).float().cpu()
                for s in range(0, len(histories), batch_size)]
    finally:
        model.train(was)
    return torch.cat(rows) if rows else torch.zeros(0, model.num_items)


class PopularityBlend(Recommender, nn.Module):
    """`model` with a popularity prior: scores every item by `blend_scores` with `calibration`.

    counts (N,): item counts from the interactions available at scoring time (see the module docstring); cold
    (N,) bool or None: the items that get `cold_weight` and `cold_bonus`. Update `counts` as interactions arrive
    (`set_counts`). `recommend` (exhaustive top-k, seen items excluded) comes from `Recommender`."""

    def __init__(self, model, counts, calibration: BlendCalibration, cold=None):
        super().__init__()
        if not isinstance(calibration, BlendCalibration):
            raise ValueError(f"calibration must be a BlendCalibration, got {type(calibration).__name__}")
        self.model, self.calibration = model, calibration
        self.register_buffer("counts", _check_counts(counts, model.num_items))
        cold = _check_cold(cold, model.num_items)
        self.register_buffer("cold", cold if cold is not None else torch.zeros(0, dtype=torch.bool))

    def set_counts(self, counts) -> None:
        self.counts = _check_counts(counts, self.num_items)

    @property
    def num_items(self) -> int:
        return self.model.num_items

    @torch.no_grad()
    def score_all(self, histories: Sequence) -> Tensor:
        c = self.calibration
        return blend_scores(self.model.score_all(histories).cpu(), self.counts, c.weight,
                            self.cold if len(self.cold) else None, c.cold_weight, c.cold_bonus)
