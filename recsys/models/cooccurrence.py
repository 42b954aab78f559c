"""Item co-occurrence (item-kNN over sequences): a model-free recommender that scores item c for user u by how often c
occurs near the items of u's recent history in the histories it was built from.

    C[j, c]   = number of position pairs (p, q), p != q, |p - q| <= window, in one history, with items j and c
    sim(j, c) = C[j, c] / (n_j ** alpha * n_c ** (1 - alpha))        n: item occurrences in those histories
    score(u, c) = sum_p decay ** (len(h_u) - 1 - p) * sim(h_u[p], c)   recent history items weigh most

It needs no training, only the interactions a deployed system has when it scores, so it also ranks items no model
trained on (cold items, in `benchmarks/recsys/cold.py` built from the histories being scored). An item counts as
co-occurring with itself never, and a history only ever contributes pairs of its own items: scoring a user's next
item uses that user's history as the query and never the item itself. `calibrate_cooccurrence` chooses the config on
validation cases.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from recsys.metrics import metrics_from_ranks, target_ranks
from recsys.models.base import Recommender, seen_mask

# the grid `calibrate_cooccurrence` searches by default: neighbours only, a short and a long window, whole histories
WINDOWS, DECAYS, ALPHAS = (1, 3, 10, 30, 0), (1.0, 0.9, 0.8, 0.7, 0.5), (0.5, 0.7, 0.9)


@dataclass(frozen=True)
class CooccurrenceConfig:
    # defaults chosen on validation (all 671 cases of the demo cold split, NDCG@10, the 75-point default grid):
    # window 10 / decay 0.7 / alpha 0.7 0.080 vs 0.063 for the best whole-history point (window 0) and 0.057 for
    # neighbours only (window 1) at the same decay and alpha
    window: int = 10  # positions apart that co-occur; 0: anywhere in one history
    decay: float = 0.7  # weight of the history item k steps before the last: decay ** k (1: every item the same)
    alpha: float = 0.7  # 0.5: cosine; larger discounts popular query items more than popular candidates

    def __post_init__(self):
        if not isinstance(self.window, (int, np.integer)) or isinstance(self.window, bool) or self.window < 0:
            raise ValueError(f"window must be an int >= 0 (0: the whole history), got {self.window!r}")
        if not 0 < self.decay <= 1:
            raise ValueError(f"decay must lie in (0, 1], got {self.decay!r}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha!r}")


def _flat(histories: Sequence, num_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(items, row of each item, position from the end of its history), all (total,) int64; checks the ids."""
    if num_items <= 0:
        raise ValueError(f"num_items must be > 0, got {num_items}")
    hs = [np.asarray(h, dtype=np.int64).reshape(-1) for h in histories]
    items = np.concatenate(hs + [np.zeros(0, np.int64)])
    if len(items) and (items.min() < 0 or items.max() >= num_items):
        raise ValueError(f"history item indices must lie in [0, {num_items}), got {items.min()}..{items.max()}")
    rows = np.repeat(np.arange(len(hs)), [len(h) for h in hs])
    back = np.concatenate([np.arange(len(h))[::-1] for h in hs] + [np.zeros(0, np.int64)])
    return items, rows, back


def cooccurrence_counts(histories: Sequence, num_items: int, window: int = 0) -> sp.csr_matrix:
    """(N, N) symmetric float64 counts C of the module docstring: position pairs of one history at most `window`
    apart (0: any distance), an item never paired with itself. histories: sequences of item indices in [0, N)."""
    CooccurrenceConfig(window=window)  # the same check as the config's
    items, rows, _ = _flat(histories, num_items)
    if window == 0:
        x = sp.csr_matrix((np.ones(len(items)), (rows, items)), shape=(len(histories), num_items))
        c = (x.T @ x).tocsr()  # sum over histories of count_j * count_c: every ordered position pair, both orders
    else:
        a, b = [], []
        for d in range(1, window + 1):  # items d positions apart in the same history
            same = rows[:-d] == rows[d:]
            a.append(items[:-d][same])
            b.append(items[d:][same])
        a, b = np.concatenate(a + [np.zeros(0, np.int64)]), np.concatenate(b + [np.zeros(0, np.int64)])
        c = sp.csr_matrix((np.ones(2 * len(a)), (np.r_[a, b], np.r_[b, a])), shape=(num_items, num_items))
    c = (c - sp.diags(c.diagonal())).tocsr()  # an item next to itself (a repeat) says nothing about other items
    c.eliminate_zeros()
    return c


class Cooccurrence(Recommender, nn.Module):
    """The co-occurrence recommender of the module docstring, built from `histories` (the interactions known when
    scoring) over a catalog of `num_items` items; `update(histories)` rebuilds it as interactions arrive. Items that
    co-occur with nothing in the user's history score 0, and so do all items for an empty history."""

    def __init__(self, histories: Sequence, num_items: int, config: CooccurrenceConfig | None = None):
        super().__init__()
        self.config = config if config is not None else CooccurrenceConfig()
        if not isinstance(self.config, CooccurrenceConfig):
            raise ValueError(f"config must be a CooccurrenceConfig, got {type(self.config).__name__}")
        self._n = int(num_items)
        self.update(histories)

    @classmethod
    def from_similarities(cls, sim: sp.spmatrix, config: CooccurrenceConfig | None = None) -> Cooccurrence:
        """A scorer over given (N, N) item-item similarities (as `sim` of one built from histories), e.g. saved ones."""
        sim = sp.csr_matrix(sim, dtype=np.float64)
        if sim.shape[0] != sim.shape[1]:
            raise ValueError(f"similarities must be square (N, N), got {sim.shape}")
        model = cls([], sim.shape[0], config)
        model.sim = sim
        return model

    def update(self, histories: Sequence) -> None:
        """Rebuild the item-item similarities from `histories`."""
        c = cooccurrence_counts(histories, self._n, self.config.window)
        items, _, _ = _flat(histories, self._n)
        n = np.maximum(np.bincount(items, minlength=self._n), 1).astype(np.float64)  # n 0 only where C is all 0
        self.sim = (sp.diags(n ** -self.config.alpha) @ c @ sp.diags(n ** -(1 - self.config.alpha))).tocsr()

    @property
    def num_items(self) -> int:
        return self._n

    @torch.no_grad()
    def score_all(self, histories: Sequence) -> Tensor:
        """(b, N) float32 scores for b histories (each a sequence of item indices, most recent last)."""
        items, rows, back = _flat(histories, self._n)
        q = sp.csr_matrix((self.config.decay ** back.astype(np.float64), (rows, items)),
                          shape=(len(histories), self._n))  # repeated items add up
        return torch.from_numpy(np.asarray((q @ self.sim).todense(), dtype=np.float32))


def calibrate_cooccurrence(histories: Sequence, targets, num_items: int, windows: Sequence[int] = WINDOWS,
                           decays: Sequence[float] = DECAYS, alphas: Sequence[float] = ALPHAS,
                           metric_k: int = 10, items=None) -> tuple[CooccurrenceConfig, list[dict]]:
    """The config with the best NDCG@`metric_k` of the given (validation) cases, built from their own `histories`
    (the inputs being scored; targets are never part of them) and ranking each target among the unseen items (among
    `items` (N,) bool only, when given). Ties go to the earlier grid point. Returns (config, [{window, decay, alpha,
    ndcg, recall}])."""
    t = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    if t.shape != (len(histories),):
        raise ValueError(f"need one target per history: {len(histories)} histories, {tuple(t.shape)} targets")
    if not (len(windows) and len(decays) and len(alphas)):
        raise ValueError("the co-occurrence grid is empty")
    exclude = seen_mask(histories, num_items)
    if items is not None:
        exclude |= ~torch.as_tensor(np.asarray(items), dtype=torch.bool)[None]
    curve = []
    for window, alpha in itertools.product(windows, alphas):
        model = Cooccurrence(histories, num_items, CooccurrenceConfig(window, 1.0, alpha))
        for decay in decays:  # the similarities do not depend on the decay: one build per (window, alpha)
            model.config = CooccurrenceConfig(window, decay, alpha)
            m = metrics_from_ranks(target_ranks(model.score_all(histories), t, exclude).numpy(), ks=(metric_k,))
            curve.append({"window": int(window), "decay": float(decay), "alpha": float(alpha),
                          "ndcg": float(m[f"ndcg@{metric_k}"].mean()), "recall": float(m[f"recall@{metric_k}"].mean())})
    best = max(enumerate(curve), key=lambda p: (p[1]["ndcg"], -p[0]))[1]
    return CooccurrenceConfig(best["window"], best["decay"], best["alpha"]), curve
