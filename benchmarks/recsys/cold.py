"""Cold start: a fifth of the catalog never appears in training; test metrics split by warm and cold targets, against
popularity and popularity among the cold items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks.recsys.models import MODELS, train_model
from recsys.data import Split
from recsys.evaluation import evaluate
from recsys.metrics import metrics_from_ranks, summarize
from recsys.models.popularity import Popularity


class ColdSplit(Split):
    """The same leave-one-out cases, but training sequences never contain the `cold` items."""

    def __init__(self, split: Split, cold: np.ndarray):
        super().__init__(split.sequences, split.num_items, split.too_short)
        self.cold = cold

    def train_sequences(self):
        return [s[~np.isin(s, self.cold)] for s in super().train_sequences()]


def by_group(model, split: Split, cold: np.ndarray, info: dict | None = None) -> dict:
    """Test metrics (with CIs) over all cases, and over the cases whose target is warm / cold."""
    r = evaluate(model, split, "test", batch_size=32)
    _, _, targets = split.cases("test")
    is_cold = np.isin(targets, cold)
    out = {"all": r["summary"]}
    for name, sel in (("warm", ~is_cold), ("cold", is_cold)):
        out[name] = {"cases": int(sel.sum()), **summarize(metrics_from_ranks(r["ranks"][sel]), n_boot=1000)}
    return {**out, **(info or {})}


def cold_start(args, split: Split, emb: torch.Tensor, opts: dict) -> dict:
    rng = np.random.default_rng(0)
    cold = np.sort(rng.choice(split.num_items, size=int(args.cold_fraction * split.num_items), replace=False))
    cs = ColdSplit(split, cold)
    work, cache = Path(args.work) / "cold", {}
    _, hists, _ = cs.cases("test")
    seen = np.bincount(np.concatenate(hists), minlength=split.num_items)  # test-time inputs, targets excluded
    out = {"cold_items": int(len(cold)), "cold_fraction": args.cold_fraction, "budget_s": args.cold_budget,
           "Popularity": by_group(Popularity.from_split(cs), cs, cold),
           "Popularity (cold items only)": by_group(Popularity(seen, only=cold), cs, cold,
                                                    {"counts": "occurrences in the test histories (model inputs)"})}
    for name in MODELS:
        model, info = train_model(name, cs, emb, args.cold_budget, work, cache, opts, cold=cold)
        out[name] = by_group(model, cs, cold, info)
        print(f"cold {name}: cold-target Recall@10 {out[name]['cold']['recall@10']['mean']:.4f}, warm "
              f"{out[name]['warm']['recall@10']['mean']:.4f}", flush=True)
    return out
