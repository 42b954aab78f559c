"""The recommender contract shared by SASRec, RecGPT and SETRec.

Histories are lists of internal item indices in time order (most recent last). Every recommender provides
`score_all(histories) -> (b, N)` scores over the whole catalog (full ranking, used by evaluation) and
`recommend(histories, k, exclude_seen) -> (items (b, k), scores (b, k))` (used by batch scoring; generative models
override it with their own decoding). Item slots that could not be filled come back as item -1 with score -inf.

The catalog can change after training (`recsys.catalog.with_catalog`): `keep_items(rows)` narrows it to items
`rows` in that order, and models that know items by their text (`text_dim` is not None) add new ones from text
embeddings alone with `add_items`.
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


def finish_topk(items: Tensor, vals: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k rows (b, <= k) made `recommend`'s answer: slots scored -inf become item -1, and rows are padded to k
    columns with item -1 / score -inf (a catalog smaller than k, or items excluded)."""
    items = items.masked_fill(torch.isinf(vals) & (vals < 0), -1)
    if items.shape[1] < k:
        b, extra = items.shape[0], k - items.shape[1]
        items = torch.cat([items, items.new_full((b, extra), -1)], 1)
        vals = torch.cat([vals, vals.new_full((b, extra), float("-inf"))], 1)
    return items, vals


def topk_items(scores: Tensor, k: int, exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Exact top-k of scores (b, N), `exclude` (b, N) bool items removed: items (b, k) and scores (b, k)."""
    if exclude is not None:
        scores = scores.masked_fill(exclude.to(scores.device), float("-inf"))
    top = scores.topk(min(k, scores.shape[1]), dim=1)
    return finish_topk(top.indices, top.values, k)


class Recommender(abc.ABC):
    """Mixin for `nn.Module` recommenders; see the module docstring."""

    @property
    @abc.abstractmethod
    def num_items(self) -> int:
        """Catalog size N."""

    @abc.abstractmethod
    def score_all(self, histories: Sequence) -> Tensor:
        """(b, N) float scores of every catalog item for each history (higher is better)."""

    @property
    def text_dim(self) -> int | None:
        """Width of the item text embeddings `add_items` takes; None for models that know items by id only."""
        return None

    def add_items(self, text: Tensor) -> Tensor:
        """Add items from their text embeddings (m, text_dim) alone; returns their indices (m,)."""
        raise ValueError(f"{type(self).__name__} knows items by the ids it was trained on: it cannot add items "
                         f"from their text")

    def keep_items(self, rows: Tensor) -> None:
        """Make the catalog exactly items `rows` (m,) distinct indices, in that order (item i becomes rows[i])."""
        raise ValueError(f"{type(self).__name__} cannot change its catalog")

    def check_rows(self, rows) -> Tensor:
        """`rows` as distinct int64 item indices in [0, N), for `keep_items`; `ValueError` otherwise."""
        rows = check_ids(torch.as_tensor(rows), self.num_items, shape=(None,), what="items to keep")
        if len(rows) == 0 or len(torch.unique(rows)) != len(rows):
            raise ValueError(f"items to keep must be distinct and at least one, got {len(rows)} "
                             f"({len(rows) - len(torch.unique(rows))} repeated)")
        return rows

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
        exclude = seen_mask(histories, self.num_items) if exclude_seen else None
        return topk_items(self.score_all(histories).float(), k, exclude)
