"""How often RecGPT's catalog beam search misses the exact top-10 of its own scores, on the demo split.

For a trained RecGPT (a model directory from recipes/recgpt.py) and every validation case of the demo split (all 671
users; seen items excluded), the reference is the exact top-10 of the model's own sequence scores: exhaustive
scoring of every catalog item through the trie (`score_all`), which `recsys.decoding.exact_top_k` must reproduce
(checked here too). For each beam width the table gives the fraction of users whose beam top-10 differs from the exact
top-10 (as a set, and as an ordered list), the mean overlap |beam & exact| / 10, Recall/NDCG@10 of the beam lists and
of the exact lists on the validation targets, and CPU milliseconds per user (one thread; `time.process_time`, robust
to other jobs on the machine; history encoding included). `exact_top_k` is timed too, with the users its first beam
could not prove exact.

    python -m benchmarks.recsys.decoding --model outputs/recgpt/model        # writes recsys_decoding.json
    python -m benchmarks.recsys.decoding --model A/model --model B/model --beams 10,20,50
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import machine, parser, print_table, write_json
from recsys.data import load_split
from recsys.decoding import beam_search, exact_top_k
from recsys.models.base import seen_mask
from recsys.models.recgpt import RecGPT
from recsys.saving import load_recommender

K = 10


def ndcg_recall(lists: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """Mean NDCG@K and Recall@K of top-K lists (b, K) against one target per user (b,)."""
    hit = lists == targets[:, None]
    pos = hit.float().argmax(1)
    found = hit.any(1)
    ndcg = torch.where(found, 1.0 / torch.log2(pos.float() + 2), torch.zeros(())).mean()
    return float(ndcg), float(found.float().mean())


def cpu_time(fn):
    """(result, CPU seconds of this process) of `fn()`."""
    t = time.process_time()
    out = fn()
    return out, time.process_time() - t


def batched(fn, hists: list, batch: int) -> torch.Tensor:
    return torch.cat([fn(hists[s: s + batch]) for s in range(0, len(hists), batch)])


def run_model(model: RecGPT, name: str, hists: list, targets: torch.Tensor, beams: list[int], batch: int) -> list[dict]:
    """Rows of the table for one model: exact reference, `exact_top_k`, then one row per beam width."""
    n = len(hists)

    def exhaustive(h):
        return model.score_all(h).masked_fill(seen_mask(h, model.num_items), float("-inf")).topk(K, dim=1)

    ref, ref_s = cpu_time(lambda: [exhaustive(hists[s: s + batch]) for s in range(0, n, batch)])
    exact_items, exact_scores = torch.cat([r.indices for r in ref]), torch.cat([r.values for r in ref])
    rows = []
    ndcg, recall = ndcg_recall(exact_items, targets)

    t, ex_items, not_proven = time.process_time(), [], 0
    for s in range(0, n, batch):
        h = hists[s: s + batch]
        items, _, misses = exact_top_k(model, model.decode_init(h), model.index, K, K, exclude=h)
        ex_items.append(items)
        not_proven += misses  # users the first beam (width 10) could not prove exact: widened for them
    ex_items, ex_s = torch.cat(ex_items), time.process_time() - t
    same = (ex_items == exact_items).all(1).float().mean()
    rows.append({"model": name, "decoder": "exhaustive", "beam": 0, "differs_set": 0.0,
                 "differs_order": 0.0, "overlap": 1.0, "ndcg@10": ndcg, "recall@10": recall,
                 "cpu_ms_per_user": 1000 * ref_s / n})
    rows.append({"model": name, "decoder": "exact_top_k", "beam": K,
                 "differs_set": 1.0 - float(same), "differs_order": 1.0 - float(same), "overlap": float(same),
                 "ndcg@10": ndcg_recall(ex_items, targets)[0], "recall@10": ndcg_recall(ex_items, targets)[1],
                 "cpu_ms_per_user": 1000 * ex_s / n, "not_proven_at_first_beam": not_proven / n})
    for beam in beams:
        def search(h, beam=beam):
            return beam_search(model, model.decode_init(h), model.index, beam, K, exclude=h)[0]

        items, s = cpu_time(lambda: batched(search, hists, batch))
        overlap = np.mean([len(set(a.tolist()) & set(e.tolist())) / K for a, e in zip(items, exact_items)])
        set_diff = np.mean([set(a.tolist()) != set(e.tolist()) for a, e in zip(items, exact_items)])
        nd, rc = ndcg_recall(items, targets)
        rows.append({"model": name, "decoder": "beam", "beam": beam, "differs_set": float(set_diff),
                     "differs_order": float((items != exact_items).any(1).float().mean()), "overlap": float(overlap),
                     "ndcg@10": nd, "recall@10": rc, "cpu_ms_per_user": 1000 * s / n})
    if not bool(torch.isfinite(exact_scores).all()):
        raise ValueError(f"{name}: a user has fewer than {K} unseen catalog items or a non-finite score")
    return rows


def main(argv=None):
    p = parser(__doc__, out="recsys_decoding.json")
    p.add_argument("--model", action="append", required=True, help="a RecGPT model directory (repeatable)")
    p.add_argument("--beams", type=lambda s: [int(x) for x in s.split(",")], default=[10, 20, 50, 100],
                   help="beam widths (>= 10: a beam holds at least the k items it returns)")
    p.add_argument("--users", type=int, default=None, help="first N validation users (default: all)")
    p.add_argument("--batch", type=int, default=128)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data, split = load_split(None, seed=0)
    _, hists, targets = split.cases("valid")
    hists = [list(map(int, h)) for h in hists][: args.users]
    targets = torch.as_tensor(np.asarray(targets))[: args.users]
    rows, models = [], {}
    for directory in args.model:
        model, ids, _ = load_recommender(directory)
        if not isinstance(model, RecGPT):
            raise SystemExit(f"{directory} holds a {type(model).__name__}, not a RecGPT")
        if list(ids) != list(data.item_ids):
            raise SystemExit(f"{directory} was not trained on the demo catalog")
        name = Path(directory).resolve().parent.name
        model.eval()
        models[name] = {"dir": str(directory), "tokenizer": type(model.items).__name__,
                        "item_tokens": model.items.table_stats(), "trie_nodes": model.index.nodes_per_level()}
        rows += run_model(model, name, hists, targets, args.beams, args.batch)
        print_table([r for r in rows if r["model"] == name], list(dict.fromkeys(c for r in rows for c in r)),
                    title=f"{name}: top-{K}, {len(hists)} validation users")
    write_json(args.out, {"machine": machine(), "threads": torch.get_num_threads(), "k": K, "users": len(hists),
                          "split": "valid", "models": models, "rows": rows,
                          "note": "differs_set / differs_order: fraction of users whose beam top-10 differs from the "
                                  "exact top-10 of the model's own scores as a set / as an ordered list; overlap: "
                                  "mean |beam & exact| / 10; ndcg@10, recall@10 on the validation targets; "
                                  "cpu_ms_per_user: process CPU time with one thread, history encoding included"})
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
