"""Zero-shot: trained on the interactions with one half of the catalog, evaluated on the other half's, whose items are
added from their text (what `recsys evaluate --catalog` does), against popularity and a SASRec trained on that half."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks.recsys.models import MODELS, sasrec_at, test_row, train_model
from recsys.catalog import Catalog, with_catalog
from recsys.data import RecData, leave_one_out
from recsys.models.popularity import Popularity


def restrict(data: RecData, items: np.ndarray) -> RecData:
    """`data` with only the interactions with `items` (m,), those items renumbered 0..m-1 in that order."""
    new = np.full(data.num_items, -1, dtype=np.int64)
    new[items] = np.arange(len(items))
    keep = new[data.items] >= 0
    return RecData(data.users[keep], new[data.items[keep]], data.timestamps[keep], data.user_ids,
                   [data.item_ids[i] for i in items], [data.item_text[i] for i in items], data.id_kind)


def zero_shot(args, data: RecData, emb: torch.Tensor, opts: dict) -> dict:
    perm = np.random.default_rng(0).permutation(data.num_items)
    half_a, half_b = np.sort(perm[: data.num_items // 2]), np.sort(perm[data.num_items // 2:])
    data_a, data_b = restrict(data, half_a), restrict(data, half_b)
    split_a, split_b = leave_one_out(data_a, seed=0), leave_one_out(data_b, seed=0)
    emb_a, emb_b = emb[half_a], emb[half_b]
    by_text = {t: emb_b[i] for i, t in enumerate(data_b.item_text)}
    work, budget = Path(args.work) / "zero", args.zero_budget
    out = {"budget_s": budget, "A": {**data_a.summary(), "split": split_a.summary()},
           "B": {**data_b.summary(), "split": split_b.summary()},
           "Popularity (B)": test_row(Popularity.from_split(split_b), split_b)}
    cache_b: dict = {}
    sas_b, info = sasrec_at(budget, split_b, work / "b", cache_b)
    out["SASRec trained on B"] = test_row(sas_b, split_b, {**info, "total_cpu_s": info["cpu_s"]})
    cache_a: dict = {}
    for name in MODELS[1:]:
        model, info = train_model(name, split_a, emb_a, budget, work / "a", cache_a, opts)
        with_catalog(model, Catalog.from_data(data_a), data_b,
                     embed=lambda texts: torch.stack([by_text[t] for t in texts]))
        out[f"{name} zero-shot"] = test_row(model, split_b, info)
        print(f"zero-shot {name}: B test NDCG@10 {out[f'{name} zero-shot']['test']['ndcg@10']['mean']:.4f}",
              flush=True)
    return out
