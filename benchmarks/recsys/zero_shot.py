"""Zero-shot: trained on the interactions with one half of the catalog, evaluated on the other half's, whose items are
added from their text (what `recsys evaluate --catalog` does), against popularity and a SASRec trained on that half;
and each model blended with B's popularity (`recsys.blend`), the blend's weight chosen on A's validation cases only.

The weight is chosen where the model is in the state it will be in on B: on A's validation cases with A's items
re-added from their text alone (`as_new_catalog`: what the model learned about A's items themselves is dropped), so the
weight fits a model that knows its items only from text; popularity is A's training counts there and B's training
counts on B (what the popularity baseline ranks by; B's targets are never counted).
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from benchmarks.recsys.cache import cached_scores
from benchmarks.recsys.models import MODELS, sasrec_at, test_row, train_model
from recsys.blend import BlendCalibration, blend_scores, calibrate_weight, model_scores, target_ranks_of
from recsys.catalog import Catalog, with_catalog
from recsys.data import RecData, leave_one_out
from recsys.metrics import metrics_from_ranks, summarize
from recsys.models.popularity import Popularity, train_counts


def restrict(data: RecData, items: np.ndarray) -> RecData:
    """`data` with only the interactions with `items` (m,), those items renumbered 0..m-1 in that order."""
    new = np.full(data.num_items, -1, dtype=np.int64)
    new[items] = np.arange(len(items))
    keep = new[data.items] >= 0
    return RecData(data.users[keep], new[data.items[keep]], data.timestamps[keep], data.user_ids,
                   [data.item_ids[i] for i in items], [data.item_text[i] for i in items], data.id_kind)


def as_new_catalog(model, text: torch.Tensor):
    """A copy of `model` whose catalog is the items of `text` (N, d) in that order, every one added from its text
    alone (as a catalog it never trained on would be), so the copy scores the same histories as zero-shot would."""
    twin = copy.deepcopy(model)
    twin.keep_items(torch.tensor([0]))  # the catalog must stay non-empty; this item is dropped below
    twin.keep_items(twin.add_items(text))
    return twin.eval()


def zero_shot(args, data: RecData, emb: torch.Tensor, opts: dict) -> dict:
    perm = np.random.default_rng(0).permutation(data.num_items)
    half_a, half_b = np.sort(perm[: data.num_items // 2]), np.sort(perm[data.num_items // 2:])
    data_a, data_b = restrict(data, half_a), restrict(data, half_b)
    split_a, split_b = leave_one_out(data_a, seed=0), leave_one_out(data_b, seed=0)
    emb_a, emb_b = emb[half_a], emb[half_b]
    by_text = {t: emb_b[i] for i, t in enumerate(data_b.item_text)}
    work, budget = Path(args.work) / "zero", args.zero_budget
    va, vb, tb = split_a.cases("valid"), split_b.cases("valid"), split_b.cases("test")
    counts_a, counts_b = train_counts(split_a), train_counts(split_b)

    def summary(scores, cases) -> dict:
        return summarize(metrics_from_ranks(target_ranks_of(scores, cases[1], cases[2])), n_boot=1000)

    pop_b = Popularity(counts_b)
    out = {"budget_s": budget, "A": {**data_a.summary(), "split": split_a.summary()},
           "B": {**data_b.summary(), "split": split_b.summary()},
           "Popularity (B)": {**test_row(pop_b, split_b), "valid_B": summary(pop_b.score_all(vb[1]), vb)},
           "Popularity (A)": {"valid_A": summary(Popularity(counts_a).score_all(va[1]), va)}}
    cache_b: dict = {}
    sas_b, info = sasrec_at(budget, split_b, work / "b", cache_b)
    out["SASRec trained on B"] = test_row(sas_b, split_b, {**info, "total_cpu_s": info["cpu_s"]})
    cache_a: dict = {}
    for name in MODELS[1:]:
        def run(name=name):
            model, info = train_model(name, split_a, emb_a, budget, work / "a", cache_a, opts)
            s = {"valid_A_text_only": model_scores(as_new_catalog(model, emb_a), va[1], 32)}
            if name == "SETRec":  # cheap for SETRec: what the weight would be without the text-only view
                s["valid_A"] = model_scores(model, va[1], 32)
            with_catalog(model, Catalog.from_data(data_a), data_b,
                         embed=lambda texts: torch.stack([by_text[t] for t in texts]))
            s.update(valid_B=model_scores(model, vb[1], 32), test_B=model_scores(model, tb[1], 32))
            return s, info
        scores, info = cached_scores(work / "scores" / name.replace(" ", "_"), args.reuse_scores, run)
        weight, curve = calibrate_weight(scores["valid_A_text_only"], counts_a, va[1], va[2])
        cal = BlendCalibration(weight, chosen_on="A's validation cases, A's items added from text alone",
                               curves={"valid_A_text_only_ndcg@10": curve})
        cal.save(work / f"calibration_{name.replace(' ', '_')}.json")
        row = {"test": summary(scores["test_B"], tb), "valid_B": summary(scores["valid_B"], vb),
               "valid_A_text_only": summary(scores["valid_A_text_only"], va), **info}
        blend = {"test": summary(blend_scores(scores["test_B"], counts_b, weight), tb),
                 "valid_B": summary(blend_scores(scores["valid_B"], counts_b, weight), vb),
                 "valid_A_text_only": summary(blend_scores(scores["valid_A_text_only"], counts_a, weight), va),
                 "calibration": asdict(cal)}
        if "valid_A" in scores:
            w_in, curve_in = calibrate_weight(scores["valid_A"], counts_a, va[1], va[2])
            row["valid_A"] = summary(scores["valid_A"], va)
            blend["weight_if_chosen_in_domain"] = {"weight": w_in, "valid_A_ndcg@10": curve_in}
        out[f"{name} zero-shot"] = row
        out[f"{name} zero-shot + popularity prior"] = blend
        print(f"zero-shot {name}: B test Recall@10 {row['test']['recall@10']['mean']:.4f}, with B's popularity "
              f"(weight {weight:g}) {blend['test']['recall@10']['mean']:.4f}", flush=True)
    return out
