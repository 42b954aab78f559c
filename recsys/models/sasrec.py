"""SASRec (Kang & McAuley 2018): a causal transformer over item-id embeddings, trained with full-softmax cross
entropy over the whole catalog at every position (the strong form of the baseline, not sampled negatives). Scores
are the dot products of the last hidden state with the (tied) item embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gentok.checkpoint import PretrainedMixin, register
from gentok.config import config, replace
from gentok.nn import Transformer, init_weights
from recsys.models.base import Recommender, RecOutput, pad_histories


@config
class SASRecConfig:
    num_items: int = 0
    dim: int = 64
    depth: int = 2
    heads: int = 2
    max_len: int = 50  # history items seen
    dropout: float = 0.2  # MovieLens-size data overfits quickly without it

    def __post_init__(self):
        if self.num_items < 0 or self.dim % self.heads or self.depth < 1 or self.max_len < 1:
            raise ValueError("num_items >= 0, dim a multiple of heads, depth and max_len >= 1 are required")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")

    @classmethod
    def tiny(cls, num_items: int = 0):
        return cls(num_items=num_items, dim=32, depth=1, heads=2, max_len=8, dropout=0.0)


# small: dropout 0.4, chosen on validation NDCG@10 (all 671 demo users, learning curves of one run each): best point
# 0.0678 (750 steps, 178 CPU-s) against 0.0663 with dropout 0.2 (624 steps, 140 CPU-s; that curve then falls to
# 0.060 by 2,500 steps: the model overfits the 100k interactions, which more dropout delays)
PRESETS = {"tiny": SASRecConfig.tiny(), "small": SASRecConfig(dropout=0.4),
           "base": SASRecConfig(dim=128, depth=2, max_len=200)}


def causal_padded_mask(valid: Tensor) -> Tensor:
    """(b, 1, T, T) bool: causal, padded keys hidden; every query may see itself so no row is empty."""
    T = valid.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=valid.device).tril()
    return ((causal[None] & valid[:, None, :]) | torch.eye(T, dtype=torch.bool, device=valid.device)[None])[:, None]


@register("recsys.sasrec")
class SASRec(PretrainedMixin, Recommender, nn.Module):
    config_class = SASRecConfig

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(config.num_items + 1, config.dim)  # last row: padding
        self.pos_emb = nn.Embedding(config.max_len, config.dim)
        self.drop = nn.Dropout(config.dropout)
        self.encoder = Transformer(config.dim, config.depth, config.heads, dropout=config.dropout)
        init_weights(self)

    @property
    def num_items(self) -> int:
        return self.config.num_items

    def hidden(self, ids: Tensor, valid: Tensor) -> Tensor:
        """ids (b, T) left-padded with `num_items` -> (b, T, d)."""
        return self.encode_embedded(self.item_emb(ids), valid)

    def encode_embedded(self, emb: Tensor, valid: Tensor) -> Tensor:
        """Item embeddings (b, T, d) of a left-padded history (`valid` (b, T) bool, T <= max_len) -> hidden states
        (b, T, d); a model that keeps the item table elsewhere (`SETRecSASRec`) embeds the items itself."""
        T = emb.shape[1]
        x = emb * self.config.dim ** 0.5 + self.pos_emb.weight[-T:][None]
        x = self.drop(x * valid[..., None])
        return self.encoder(x, mask=causal_padded_mask(valid))

    def last_hidden(self, table: Tensor, histories: Sequence) -> Tensor:
        """(b, d) the hidden state after each history, its items embedded from `table` (N, d) instead of this
        model's own item table (models that keep the SASRec's item rows elsewhere: `SETRecSASRec`, `RecGPTSASRec`)."""
        ids, valid = pad_histories(histories, self.config.max_len, -1)
        ids, valid = ids.to(table.device), valid.to(table.device)
        return self.encode_embedded(table[ids.clamp(min=0)], valid)[:, -1]

    def item_vectors(self) -> Tensor:
        """(N, d) the catalog's item embeddings (also used as SETRec's CF signal)."""
        return self.item_emb.weight[: self.num_items]

    def keep_items(self, rows: Tensor) -> None:
        """Narrow the catalog to items `rows` in that order (a subset of the items it was trained on)."""
        rows = self.check_rows(rows).to(self.item_emb.weight.device)
        w = self.item_emb.weight.detach()
        self.item_emb = nn.Embedding.from_pretrained(torch.cat([w[rows], w[-1:]]), freeze=False)
        self.config = replace(self.config, num_items=len(rows))

    def forward(self, window: Tensor) -> RecOutput:
        """Full-softmax next-item loss on windows (b, T + 1) left-padded with -1."""
        ids, targets = window[:, :-1], window[:, 1:]
        valid = ids >= 0
        h = self.hidden(torch.where(valid, ids, self.num_items), valid)
        use = valid & (targets >= 0)
        logits = h[use] @ self.item_vectors().T
        loss = F.cross_entropy(logits, targets[use])
        return RecOutput(loss, {"acc": (logits.argmax(-1) == targets[use]).float().mean().detach()})

    def user_vectors(self, histories: Sequence) -> Tensor:
        ids, valid = pad_histories(histories, self.config.max_len, self.num_items)
        dev = self.item_emb.weight.device
        return self.hidden(ids.to(dev), valid.to(dev))[:, -1]

    @torch.no_grad()
    def score_all(self, histories: Sequence) -> Tensor:
        return self.user_vectors(histories) @ self.item_vectors().T
