"""RecGPT on a trained SASRec: the two models' next-item distributions pooled log-linearly,
`score(item) = (1 - w) * log p_SASRec(item) + w * log p_RecGPT(item)`, with the generative weight `w` fitted on
validation.

RecGPT scores an item by the exact log-probability of its code sequence (summed over the levels of the catalog trie,
`recsys.decoding.score_catalog`), SASRec by its softmax over the catalog it was trained on; both are
log-probabilities, so `w` trades two proper distributions and the pooled scores are the log of a (renormalizable)
product of experts. The weight is fitted by the **negative log-likelihood** of the validation targets under the pooled
distribution renormalized over each user's unseen items (`select_gen_weight`): a proper score that reads every item's
rank, not only whether the target lands in a top 10, so it separates weights that 671 users' NDCG@10 cannot (on the
demo split validation NDCG@10 is flat within noise for w in [0, 0.3] while the NLL has a clear minimum; the curves
per weight are in `benchmarks/results/recsys.json`, "RecGPT (RQ-VAE codes) on SASRec").

This is the RecGPT recipe's default model when it has a SASRec (its collaborative item codes train one anyway):
`recipes/recgpt.py`. Items without a SASRec row (added later from text with `add_items`, or trained on no
interaction) take RecGPT's log-probability as their SASRec part, so a new item is ranked by the generative model
alone. Ranking is exhaustive: every catalog item is scored exactly (about 10 ms per user on the demo catalog of
9,066 items, one CPU thread), so `recommend` returns the exact top-k of the pooled scores.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gentok.checkpoint import register
from gentok.config import config, replace
from recsys.decoding import score_catalog
from recsys.metrics import target_ranks
from recsys.models.base import seen_mask, topk_items
from recsys.models.recgpt import RecGPT, RecGPTConfig
from recsys.models.sasrec import SASRec, SASRecConfig

GEN_WEIGHTS = tuple(i / 20 for i in range(21))  # the generative weights `select_gen_weight` tries


@config
class RecGPTSASRecConfig(RecGPTConfig):
    sasrec: SASRecConfig = SASRecConfig()  # the frozen SASRec; num_items: the catalog it was trained on


@register("recsys.recgpt_sasrec")
class RecGPTSASRec(RecGPT):
    """A RecGPT and a frozen SASRec pooled log-linearly; see the module docstring. Build it with `on`."""

    config_class = RecGPTSASRecConfig

    def __init__(self, config: RecGPTSASRecConfig):
        super().__init__(config)
        self.sasrec = SASRec(replace(config.sasrec, num_items=0))  # its item table lives in `cf` / `cf_trained`
        self.sasrec.requires_grad_(False)
        self.sasrec.eval()
        n = config.tokenizer.num_items
        self.register_buffer("cf", torch.zeros(n, config.sasrec.dim))  # SASRec item embeddings, 0 where missing
        self.register_buffer("has_cf", torch.zeros(n, dtype=torch.bool))
        # the SASRec's own item table, which catalog changes leave alone: its softmax normalizer, so an item's SASRec
        # log-probability does not change when other items are added or dropped
        self.register_buffer("cf_trained", torch.zeros(config.sasrec.num_items, config.sasrec.dim))
        self.register_buffer("gen_weight", torch.tensor(0.5))  # set on validation by `select_gen_weight`

    @classmethod
    def on(cls, recgpt: RecGPT, sasrec: SASRec, has_cf: Tensor | None = None) -> RecGPTSASRec:
        """The pooled model of a trained `recgpt` and a trained `sasrec` over the same catalog (both copied; the
        SASRec is frozen). `has_cf` (N,) bool: the items whose SASRec row counts (default all)."""
        if type(recgpt) is not RecGPT:
            raise TypeError(f"RecGPTSASRec.on needs a RecGPT, got {type(recgpt).__name__}")
        if sasrec.num_items != recgpt.num_items:
            raise ValueError(f"the SASRec has {sasrec.num_items} items, the RecGPT {recgpt.num_items}: they must be "
                             "trained on the same catalog")
        has_cf = torch.ones(sasrec.num_items, dtype=torch.bool) if has_cf is None else torch.as_tensor(has_cf)
        if has_cf.dtype != torch.bool or has_cf.shape != (sasrec.num_items,):
            raise ValueError(f"has_cf must be a bool tensor of shape ({sasrec.num_items},)")
        model = cls(RecGPTSASRecConfig(**{**vars(recgpt.config), "sasrec": sasrec.config}))
        model.set_catalog(copy.deepcopy(recgpt.items), recgpt.text.clone())  # later catalog changes stay ours
        model.load_state_dict(recgpt.state_dict(), strict=False)  # the new buffers and the SASRec follow
        model.sasrec.load_state_dict({k: v for k, v in sasrec.state_dict().items() if not k.startswith("item_emb")},
                                     strict=False)
        dev = model.text.device
        model.cf = sasrec.item_vectors().detach().float().to(dev).clone()
        model.cf_trained = model.cf.clone()
        model.has_cf = has_cf.to(dev)
        return model

    def train(self, mode: bool = True):
        super().train(mode)
        self.sasrec.eval()  # frozen: no dropout, in training or not
        return self

    # -- catalog (the SASRec rows follow the items) ---------------------------------------------------------------
    @torch.no_grad()
    def add_items(self, text: Tensor) -> Tensor:
        idx = super().add_items(text)
        self.cf = torch.cat([self.cf, self.cf.new_zeros(len(idx), self.cf.shape[1])])
        self.has_cf = torch.cat([self.has_cf, self.has_cf.new_zeros(len(idx))])
        return idx

    def keep_items(self, rows: Tensor) -> None:
        rows = self.check_rows(rows)
        super().keep_items(rows)
        self.cf, self.has_cf = self.cf[rows.to(self.cf.device)], self.has_cf[rows.to(self.cf.device)]

    # -- scores ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def part_scores(self, histories: Sequence) -> tuple[Tensor, Tensor]:
        """(SASRec, RecGPT) log-probabilities of every catalog item, each (b, N): SASRec's softmax over the catalog
        it was trained on, RecGPT's exact code-sequence log-probabilities; items without a SASRec row carry
        RecGPT's in the SASRec part too. Neither depends on the current catalog, so adding or dropping items leaves
        the scores of the others unchanged (a renormalization would only shift each user's scores by a constant)."""
        self.check_histories(histories)
        if not len(self.cf_trained):
            raise ValueError("this RecGPTSASRec holds no trained SASRec: build it with RecGPTSASRec.on(recgpt, sasrec)")
        gen = score_catalog(self, self.decode_init(histories), self.index)  # (b, N) exact, catalog-independent
        h = self.sasrec.last_hidden(self.cf, histories)
        norm = torch.logsumexp((h @ self.cf_trained.T).float(), dim=1, keepdim=True)
        sas = ((h @ self.cf.T).float() - norm).cpu()
        return torch.where(self.has_cf.cpu()[None], sas, gen), gen

    @torch.no_grad()
    def score_all(self, histories: Sequence) -> Tensor:
        """Pooled log-scores (b, N): `(1 - gen_weight) * log p_SASRec + gen_weight * log p_RecGPT`."""
        sas, gen = self.part_scores(histories)
        w = float(self.gen_weight)
        return (1 - w) * sas + w * gen

    @torch.no_grad()
    def recommend(self, histories: Sequence, k: int = 10, exclude_seen: bool = True,
                  beam: int | None = None, exact: bool = True) -> tuple[Tensor, Tensor]:
        """The exact top-k items (b, k) of the pooled scores and those scores (b, k); every catalog item is scored
        (`beam` and `exact` are accepted for RecGPT's signature and have no effect)."""
        scores = self.score_all(histories)
        return topk_items(scores, k, seen_mask(histories, self.num_items) if exclude_seen else None)


@torch.no_grad()
def select_gen_weight(model: RecGPTSASRec, valid_histories: Sequence, valid_targets: Sequence[int],
                      grid: Sequence[float] = GEN_WEIGHTS, batch_size: int = 64) -> dict:
    """Fit `model.gen_weight` on **validation** cases (the only data this function receives): the weight of `grid`
    with the lowest mean negative log-likelihood of the targets under the pooled distribution renormalized over each
    user's unseen items; ties go to the smaller weight. Also reports NDCG@10 per weight. Returns
    {"weight", "nll": {w: value}, "ndcg@10": {w: value}, "cases"}."""
    if len(valid_histories) != len(valid_targets) or not len(valid_targets):
        raise ValueError("need the same, non-zero number of validation histories and targets")
    if not grid or any(not 0.0 <= w <= 1.0 for w in grid):
        raise ValueError(f"generative weights must lie in [0, 1], got {list(grid)}")
    was_training = model.training
    model.eval()
    nll, ndcg = dict.fromkeys(grid, 0.0), dict.fromkeys(grid, 0.0)
    for s in range(0, len(valid_histories), batch_size):
        h = list(valid_histories[s: s + batch_size])
        t = torch.as_tensor(np.asarray(valid_targets[s: s + batch_size]), dtype=torch.long)[:, None]
        sas, gen = model.part_scores(h)
        seen = seen_mask(h, model.num_items)
        seen &= ~torch.zeros_like(seen).scatter_(1, t, True)  # the target is never removed (as in recsys.metrics)
        for w in grid:
            pooled = ((1 - w) * sas + w * gen).masked_fill(seen, float("-inf"))
            nll[w] -= float(F.log_softmax(pooled, dim=1).gather(1, t).sum())
            rank = target_ranks(pooled, t[:, 0]).float()  # 1-based, ties against the target
            ndcg[w] += float(torch.where(rank <= 10, 1.0 / torch.log2(rank + 1), 0.0).sum())
    model.train(was_training)
    n = len(valid_targets)
    nll, ndcg = {w: v / n for w, v in nll.items()}, {w: v / n for w, v in ndcg.items()}
    best = min(grid, key=lambda w: (nll[w], w))
    model.gen_weight.fill_(best)
    return {"weight": best, "nll": nll, "ndcg@10": ndcg, "cases": n}


def choose_gen_weight(model: RecGPTSASRec, split) -> dict:
    """`select_gen_weight` on the split's validation cases (the test cases are never requested)."""
    _, hists, targets = split.cases("valid")
    return select_gen_weight(model, hists, targets)
