"""Full-ranking evaluation of any `Recommender` on the split's validation or test cases, and model selection on
validation (keep the weights with the best validation NDCG@10; the test cases are never looked at)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from tqdm.auto import tqdm

from recsys.data import Split
from recsys.metrics import KS, metrics_from_ranks, summarize, target_ranks
from recsys.models.base import seen_mask


@torch.no_grad()
def evaluate(model, split: Split, which: str = "test", batch_size: int = 128, exclude_seen: bool = True,
             ks=KS, n_boot: int = 1000, progress: bool = False, max_users: int | None = None) -> dict:
    """Rank every catalog item for each case. Returns {"summary": {metric: {mean, ci_low, ci_high}},
    "per_user": {metric: array}, "users": [...], "ranks": array, "cases": n}."""
    users, hists, targets = split.cases(which)
    if max_users is not None:
        users, hists, targets = users[:max_users], hists[:max_users], targets[:max_users]
    was_training = model.training
    model.eval()
    ranks = []
    try:
        for s in tqdm(range(0, len(hists), batch_size), disable=not progress, desc=f"eval {which}"):
            h = hists[s: s + batch_size]
            t = torch.as_tensor(targets[s: s + batch_size])
            scores = model.score_all(h)
            ranks.append(target_ranks(scores, t, seen_mask(h, scores.shape[1]) if exclude_seen else None))
    finally:
        model.train(was_training)
    ranks = torch.cat(ranks).numpy() if ranks else np.zeros(0, dtype=np.int64)
    per_user = metrics_from_ranks(ranks, ks)
    return {"summary": summarize(per_user, n_boot=n_boot), "per_user": per_user, "users": users, "ranks": ranks,
            "cases": len(ranks)}


class SelectOnValidation:
    """An `eval_fn` for `gentok.training.fit`: validation metrics, remembering the best weights by `metric`.

    After training, `restore(model)` loads the best-on-validation weights. Only validation cases are used.
    """

    def __init__(self, split: Split, metric: str = "ndcg@10", batch_size: int = 128, max_users: int | None = None):
        self.split, self.metric, self.batch_size, self.max_users = split, metric, batch_size, max_users
        self.best = -1.0
        self.best_state = None
        self.history: list[dict] = []

    def __call__(self, model, loader) -> dict:
        result = evaluate(model, self.split, "valid", batch_size=self.batch_size, n_boot=1,
                          max_users=self.max_users)
        metrics = {k: v["mean"] for k, v in result["summary"].items()}
        self.history.append(metrics)
        if metrics[self.metric] > self.best:
            self.best = metrics[self.metric]
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        return metrics

    def restore(self, model) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
