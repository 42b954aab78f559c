"""Full-ranking evaluation of any `Recommender` on the split's validation or test cases, the recipes' report, and
model selection on validation: the weights with the best validation NDCG@10 (`SelectOnValidation`) and SETRec's
CF/semantic weight (`select_cf_weight`). Selection never looks at the test cases."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gentok.files import atomic_write_json
from recsys.data import Split
from recsys.metrics import KS, format_table, metrics_from_ranks, summarize, target_ranks
from recsys.models.base import seen_mask

CF_WEIGHTS = tuple(i / 10 for i in range(11))  # the CF/semantic weights `select_cf_weight` tries


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
        return self.remember(model, {k: v["mean"] for k, v in result["summary"].items()})

    def remember(self, model, metrics: dict) -> dict:
        """Record one validation pass; keep a copy of the weights when `metrics[self.metric]` is the best so far."""
        self.history.append(metrics)
        if metrics[self.metric] > self.best:
            self.best = metrics[self.metric]
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        return metrics

    def restore(self, model) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


@torch.no_grad()
def select_cf_weight(model, valid_histories: Sequence, valid_targets: Sequence[int],
                     grid: Sequence[float] = CF_WEIGHTS, metric_k: int = 10, batch_size: int = 256) -> dict:
    """Choose a SETRec's CF/semantic weight by NDCG@`metric_k` on **validation** cases, which are the only data this
    function receives (the caller passes `split.cases("valid")`; see `choose_cf_weight`). Sets `model.cf_weight`
    and returns {"weight": w, "ndcg": {w: value}}."""
    if len(valid_histories) != len(valid_targets) or not len(valid_targets):
        raise ValueError("need the same, non-zero number of validation histories and targets")
    was_training = model.training
    model.eval()
    gains = {w: 0.0 for w in grid}
    for s in range(0, len(valid_histories), batch_size):
        h = list(valid_histories[s: s + batch_size])
        t = torch.as_tensor(np.asarray(valid_targets[s: s + batch_size]), dtype=torch.long)
        cf, sem = model.part_scores_for(h)
        seen = seen_mask(h, model.num_items).to(cf.device)
        for w in grid:
            scores = (w * cf + (1 - w) * sem).masked_fill(seen, float("-inf"))
            target = scores.gather(1, t[:, None].to(cf.device))
            rank = (scores > target).sum(1).cpu()  # 0-based
            gains[w] += float(torch.where(rank < metric_k, 1.0 / torch.log2(rank.float() + 2), 0.0).sum())
    model.train(was_training)
    ndcg = {w: g / len(valid_targets) for w, g in gains.items()}
    best = max(ndcg, key=lambda w: (ndcg[w], -abs(w - 0.5)))
    model.cf_weight.fill_(best)
    return {"weight": best, "ndcg": ndcg}


def choose_cf_weight(model, split, grid: Sequence[float] = CF_WEIGHTS) -> dict:
    """`select_cf_weight` on the split's validation cases (the test cases are never requested)."""
    _, hists, targets = split.cases("valid")
    return select_cf_weight(model, hists, targets, grid)


def report(model, split: Split, output_dir: str | Path, name: str, extra: dict | None = None) -> dict:
    """Validation and test metrics with bootstrap CIs (what a recipe ends with): printed as a table and written to
    `output_dir/metrics.json` with `extra`; returns the dict written."""
    valid = evaluate(model, split, "valid", progress=True)
    test = evaluate(model, split, "test", progress=True)
    out = {"model": name, "split": split.summary(), "valid": valid["summary"], "test": test["summary"],
           **(extra or {})}
    atomic_write_json(Path(output_dir) / "metrics.json", out)
    print(format_table({f"{name} valid": valid["summary"], f"{name} test": test["summary"]}))
    print(f"split: {split.summary()}  -> {Path(output_dir) / 'metrics.json'}")
    return out
