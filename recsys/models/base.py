"""The recommender contract shared by SASRec, RecGPT and SETRec.

Histories are lists of internal item indices in time order (most recent last). Every recommender provides
`score_all(histories) -> (b, N)` scores over the whole catalog (full ranking, used by evaluation) and
`recommend(histories, k, exclude_seen) -> (items (b, k), scores (b, k))` (used by batch scoring; generative models
override it with their own decoding). Item slots that could not be filled come back as item -1 with score -inf.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gentok.validate import check_ids


@dataclass
class RecOutput:
    """What a recommender's training `forward` returns (read by `gentok.training.default_loss`)."""

    loss: Tensor
    metrics: dict = field(default_factory=dict)


def pad_histories(histories: Sequence, max_len: int, pad: int) -> tuple[Tensor, Tensor]:
    """Left-pad (most recent item at the right) and keep the last `max_len` items.
    Returns ids (b, max_len) long and valid (b, max_len) bool."""
    b = len(histories)
    ids = torch.full((b, max_len), pad, dtype=torch.long)
    for i, h in enumerate(histories):
        h = torch.as_tensor(h, dtype=torch.long)[-max_len:]
        if len(h):
            ids[i, max_len - len(h):] = h
    return ids, ids != pad


def seen_mask(histories: Sequence, num_items: int) -> Tensor:
    """(b, N) bool: True where the item occurs in the user's history."""
    mask = torch.zeros(len(histories), num_items, dtype=torch.bool)
    for i, h in enumerate(histories):
        if len(h):
            mask[i, torch.as_tensor(h, dtype=torch.long)] = True
    return mask


class Recommender(abc.ABC):
    """Mixin for `nn.Module` recommenders; see the module docstring."""

    @property
    @abc.abstractmethod
    def num_items(self) -> int:
        """Catalog size N."""

    @abc.abstractmethod
    def score_all(self, histories: Sequence) -> Tensor:
        """(b, N) float scores of every catalog item for each history (higher is better)."""

    def check_histories(self, histories: Sequence) -> None:
        """Raise `ValueError` unless every history is a non-empty 1-d sequence of item indices in [0, N)."""
        for i, h in enumerate(histories):
            if len(h) == 0:
                raise ValueError(f"history {i} is empty: a recommender needs at least one known item")
            check_ids(torch.as_tensor(h), self.num_items, shape=(None,), what=f"history {i} item indices")

    @torch.no_grad()
    def recommend(self, histories: Sequence, k: int = 10, exclude_seen: bool = True) -> tuple[Tensor, Tensor]:
        """Top-k items (b, k) long and scores (b, k) float by exhaustive scoring of the catalog."""
        self.check_histories(histories)
        scores = self.score_all(histories).float()
        if exclude_seen:
            scores = scores.masked_fill(seen_mask(histories, self.num_items), float("-inf"))
        k_eff = min(k, self.num_items)
        top = scores.topk(k_eff, dim=1)
        items, vals = top.indices, top.values
        items = items.masked_fill(torch.isinf(vals) & (vals < 0), -1)
        if k_eff < k:
            items = torch.cat([items, items.new_full((len(histories), k - k_eff), -1)], 1)
            vals = torch.cat([vals, vals.new_full((len(histories), k - k_eff), float("-inf"))], 1)
        return items, vals
