"""Popularity: every user gets the items with the most training interactions. The baseline every recommender here is
quoted against (a model that does not beat it has learned nothing personal), and, restricted to a set of items
(`only`), the baseline of cold-start and zero-shot targets."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from recsys.models.base import Recommender


def train_counts(split) -> np.ndarray:
    """(N,) int64 training interactions per item of a `recsys.data.Split` (its `train_sequences`)."""
    return np.bincount(np.concatenate([s for s in split.train_sequences()] + [np.zeros(0, np.int64)]),
                       minlength=split.num_items)


def history_counts(histories, num_items: int) -> np.ndarray:
    """(N,) int64 occurrences of each item in `histories` (the inputs being scored, targets not included): the
    popularity a deployed system knows at scoring time, items that had no training interactions (cold) included."""
    flat = [np.asarray(h, dtype=np.int64).reshape(-1) for h in histories]
    flat = np.concatenate(flat + [np.zeros(0, np.int64)])
    if len(flat) and (flat.min() < 0 or flat.max() >= num_items):
        raise ValueError(f"history item indices must lie in [0, {num_items}), got {flat.min()}..{flat.max()}")
    return np.bincount(flat, minlength=num_items)


class Popularity(Recommender, nn.Module):
    """Scores every item by a fixed count (`counts` (N,), e.g. `train_counts(split)`); `only` (m,) restricts the
    ranking to those items (the others score -1, below every counted item)."""

    def __init__(self, counts: np.ndarray, only: np.ndarray | None = None):
        super().__init__()
        s = torch.as_tensor(np.asarray(counts), dtype=torch.float32)
        if s.ndim != 1 or bool((s < 0).any()):
            raise ValueError(f"counts must be a 1-d array of non-negative counts, got shape {tuple(s.shape)}")
        if only is not None:
            keep = torch.zeros(len(s), dtype=torch.bool)
            keep[torch.as_tensor(only, dtype=torch.long)] = True
            s = torch.where(keep, s, torch.full_like(s, -1.0))
        self.register_buffer("scores", s)

    @classmethod
    def from_split(cls, split, only: np.ndarray | None = None) -> Popularity:
        """Popularity by the training interactions of `split`."""
        return cls(train_counts(split), only)

    @property
    def num_items(self) -> int:
        return len(self.scores)

    @torch.no_grad()
    def score_all(self, histories: Sequence) -> Tensor:
        return self.scores[None].expand(len(histories), -1)
