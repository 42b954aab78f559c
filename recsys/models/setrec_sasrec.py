"""SETRec on a trained SASRec: the CF part of the set identifier is scored by the SASRec itself, so the generative
model starts from the baseline's quality and its text semantic tokens have to add to it.

`SETRec` learns to *generate* its CF token from a frozen SASRec item table with its own (shorter, smaller) history
encoder, which on the demo data stays below the SASRec that supplied the table. Here the CF token of the next item
is the frozen SASRec's user vector (its own encoder over the history, `max_len` items) and the CF keys are the
SASRec item embeddings, so the CF part is exactly SASRec's logits (times the matching temperature, on the same scale
as the semantic part's `cos / temperature`). The semantic tokens are generated as in `SETRec` (same set-token
history, CF slot included) and trained two ways at once: alone (`cross_entropy(sem / tau)`) and as the residual of
the SASRec logits (`cross_entropy(logits + sem / tau)`), so they learn what the SASRec misses. At CF weight 1 (chosen
on validation with the rest of the grid, `recsys.evaluation.select_cf_weight`) the model ranks warm items exactly as
its SASRec does.

Catalog changes work as in `SETRec`: the SASRec item table lives in the `cf` buffer (zero for items added from text
or dropped as cold), history items are embedded from it, and a cold item's CF part is imputed by its semantic part.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from gentok.checkpoint import register
from gentok.config import config, replace
from recsys.models.base import RecOutput
from recsys.models.sasrec import SASRec, SASRecConfig
from recsys.models.setrec import SETRec, SETRecConfig


@config
class SETRecSASRecConfig(SETRecConfig):
    sasrec: SASRecConfig = SASRecConfig()  # the frozen SASRec that scores the CF part (its num_items is unused)

    def __post_init__(self):
        super().__post_init__()
        if self.sasrec.dim != self.cf_dim:
            raise ValueError(f"cf_dim ({self.cf_dim}) must equal the SASRec's dim ({self.sasrec.dim})")

    @classmethod
    def tiny(cls, embed_dim: int = 24, cf_dim: int = 16):
        return cls(**{**vars(SETRecConfig.tiny(embed_dim, cf_dim)),
                      "sasrec": replace(SASRecConfig.tiny(), dim=cf_dim)})


@register("recsys.setrec_sasrec")
class SETRecSASRec(SETRec):
    config_class = SETRecSASRecConfig

    def __init__(self, config: SETRecSASRecConfig):
        super().__init__(config)
        self.sasrec = SASRec(replace(config.sasrec, num_items=0))  # item table unused: items come from `cf`
        self.sasrec.requires_grad_(False)
        self.sasrec.eval()

    @classmethod
    def on(cls, sasrec: SASRec, text: Tensor, config: SETRecConfig) -> SETRecSASRec:
        """A model over `sasrec` (trained; copied and frozen) and the items' text embeddings (N, embed_dim)."""
        if text.shape[0] != sasrec.num_items:
            raise ValueError(f"{text.shape[0]} item texts for a SASRec of {sasrec.num_items} items")
        sc = replace(sasrec.config, num_items=0)
        model = cls(SETRecSASRecConfig(**{**vars(config), "cf_dim": sc.dim, "embed_dim": text.shape[1],
                                          "sasrec": sc}))
        own = {k: v for k, v in sasrec.state_dict().items() if not k.startswith("item_emb")}
        model.sasrec.load_state_dict(own, strict=False)
        model.set_catalog(text, sasrec.item_vectors().detach())
        return model

    def train(self, mode: bool = True):
        super().train(mode)
        self.sasrec.eval()  # frozen: no dropout in the CF part, in training or not
        return self

    def user_vectors(self, ids: Tensor, valid: Tensor) -> Tensor:
        """SASRec's hidden states (b, T, cf_dim) for item indices `ids` (b, T) (-1 or any value where not valid),
        embedding history items from the `cf` table (the SASRec's item embeddings, zero for items without)."""
        n = self.sasrec.config.max_len
        ids, valid = ids[:, -n:], valid[:, -n:]
        return self.sasrec.encode_embedded(self.cf[ids.clamp(min=0)], valid)  # frozen SASRec: eval, no dropout

    def last_user_vectors(self, histories: Sequence) -> Tensor:
        """(b, cf_dim) the SASRec's user vector after each history (what its logits are taken from)."""
        return self.sasrec.last_hidden(self.cf, histories)  # frozen SASRec: eval, no dropout

    def cf_logits(self, histories: Sequence) -> Tensor:
        """(b, N) the SASRec's logits for each history, times the temperature (0 for items without a CF vector)."""
        return (self.last_user_vectors(histories) @ self.cf.T) * self.config.temperature

    def forward(self, window: Tensor) -> RecOutput:
        """Windows (b, T+1) left-padded with -1: the semantic part's full-softmax loss, alone and as the residual of
        the frozen SASRec's logits, + the weighted text reconstruction."""
        ids, targets = window[:, :-1], window[:, 1:]
        valid = ids >= 0
        table, recon = self.item_tokens()
        gen = self.generate(table[ids.clamp(min=0)], valid, all_positions=True)  # (b, T, L, k)
        use = valid & (targets >= 0)
        g, t = gen[use], targets[use]
        sem = torch.einsum("mlk,nlk->mn", g[:, 1:], table[:, 1:]) / self.config.n_semantic
        with torch.no_grad():
            cf = self.user_vectors(ids, valid)[use] @ self.cf.T  # SASRec's logits, no temperature
        if not bool(self.has_cf.all()):  # cold items stay out of the softmax, as in SETRec
            out = ~self.has_cf[None, :] & (torch.arange(self.num_items, device=t.device)[None, :] != t[:, None])
            sem, cf = sem.masked_fill(out, float("-inf")), cf.masked_fill(out, 0.0)
        tau = self.config.temperature
        loss_sem = F.cross_entropy(sem / tau, t)
        loss_res = F.cross_entropy(cf + sem / tau, t)
        loss = loss_sem + loss_res + self.config.recon_weight * recon
        acc = ((cf + sem / tau).argmax(-1) == t).float().mean()
        return RecOutput(loss, {"loss_sem": loss_sem.detach(), "loss_res": loss_res.detach(), "recon": recon.detach(),
                                "acc": acc.detach()})

    def catalog_keys(self) -> Tensor:
        """(N, cf_dim + n * tok_dim [+ n * tok_dim]) keys: the SASRec item embeddings (zero without CF), the semantic
        tokens, and for catalogs with cold items the semantic tokens of cold items again (the imputed CF part)."""
        if not self.training and self._keys is not None and len(self._keys) == self.num_items:
            return self._keys
        sem = self.catalog_table()[:, 1:]
        keys = [self.cf * self.has_cf[:, None], sem.flatten(1)]
        if not bool(self.has_cf.all()):
            keys.append((sem * ~self.has_cf[:, None, None]).flatten(1))
        keys = torch.cat(keys, 1)
        if not self.training:
            self._keys = keys
        return keys

    @torch.no_grad()
    def queries_and_keys(self, histories: Sequence, weight: float | None = None) -> tuple[Tensor, Tensor]:
        """query (b, D) = [w * tau * SASRec user vector, (1-w)/n * semantic tokens (, w/n * semantic tokens)], so
        `query @ key.T == w * cf_part + (1 - w) * semantic_part` with a cold item's CF part imputed as in SETRec."""
        keys = self.catalog_keys()
        gen = self.generate(*self._history_tokens(histories, self.catalog_table()))
        u = self.last_user_vectors(histories)
        w, n = float(self.cf_weight) if weight is None else weight, self.config.n_semantic
        parts = [u * (w * self.config.temperature), gen[:, 1:].flatten(1) * ((1 - w) / n)]
        if keys.shape[1] > self.config.cf_dim + n * self.config.tok_dim:
            parts.append(gen[:, 1:].flatten(1) * (w / n))
        return torch.cat(parts, 1), keys

    @torch.no_grad()
    def part_scores_for(self, histories: Sequence) -> tuple[Tensor, Tensor]:
        """(CF part, semantic part), each (b, N): the CF part is tau * SASRec's logits (a cold item's: its semantic
        part), for validation-time weight selection."""
        table = self.catalog_table()
        gen = self.generate(*self._history_tokens(histories, table))
        sem = torch.einsum("blk,nlk->bn", gen[:, 1:], table[:, 1:]) / self.config.n_semantic
        return torch.where(self.has_cf[None, :], self.cf_logits(histories), sem), sem
