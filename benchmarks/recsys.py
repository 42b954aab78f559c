"""Recommendation benchmark on the demo split (MovieLens latest-small):

* quality: SASRec vs RecGPT vs SETRec (test metrics of the validation-selected weights, bootstrap CIs; SETRec's
  CF/semantic weight is chosen on validation cases);
* cold start: 20% of the catalog (seeded, uniform) is removed from every training sequence; SASRec and SETRec are
  retrained on what is left and their test metrics are split by whether the target is a warm or a cold item
  (SETRec scores cold items from their text alone);
* scoring throughput / latency per user / peak memory: RecGPT's catalog-constrained beam search, SETRec's one-pass
  generation + inner-product top-K, and a faiss brute-force top-K over item embeddings, same histories, on the demo
  catalog and on a synthetic 1,000,000-item catalog.

    python -m benchmarks.recsys                       # writes benchmarks/results/recsys.json
    python -m benchmarks.recsys --sasrec-steps 800 --recgpt-steps 1200 --setrec-steps 300   # trains all three
    python -m benchmarks.recsys --sasrec-model outputs/sasrec/model --recgpt-model outputs/recgpt/model  # recipes'
    python -m benchmarks.recsys --cold-only        # redo only the cold-start rows (others kept in the JSON)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from benchmarks.common import best_time, parser, write_json
from gentok.config import replace
from gentok.training import TrainConfig
from recsys.data import Split
from recsys.evaluation import evaluate
from recsys.item_tokens import ItemTokenizer, ItemTokenizerConfig
from recsys.metrics import format_table, metrics_from_ranks, summarize
from recsys.models.recgpt import RecGPT, RecGPTConfig
from recsys.models.sasrec import SASRec, SASRecConfig
from recsys.models.setrec import SETRec, SETRecConfig, choose_cf_weight
from benchmarks.common import PeakRSS
from recsys.pipeline import item_embeddings, load_recommender, prepare, train_item_tokenizer, train_recommender


COMMON = dict(batch_size=64, lr=2e-3, warmup_steps=30, weight_decay=0.01, eval_every=100, checkpoint_every=0,
              progress=False, log_every=50)


def train_sasrec(split: Split, steps: int, out_dir: str) -> tuple[SASRec, object]:
    cfg = SASRecConfig(num_items=split.num_items)
    result, sel = train_recommender(SASRec(cfg), split, TrainConfig(output_dir=out_dir, max_steps=steps,
                                                                    **{**COMMON, "batch_size": 32}), cfg.max_len)
    return result.model, sel


def train_setrec(split: Split, emb: torch.Tensor, sas: SASRec, steps: int, out_dir: str,
                 cold: np.ndarray | None = None) -> tuple[SETRec, object, dict]:
    """SETRec with the recipe's defaults; CF tokens from `sas`; `cold` items get no CF token (text only)."""
    cfg = SETRecConfig(embed_dim=emb.shape[1], cf_dim=sas.config.dim)
    model = SETRec(cfg)
    model.set_catalog(emb, sas.item_vectors().detach().cpu())
    if cold is not None:
        model.drop_cf(torch.from_numpy(cold))
    result, sel = train_recommender(model, split, TrainConfig(output_dir=out_dir, max_steps=steps,
                                                              **{**COMMON, "batch_size": 32}), cfg.max_items,
                                    eval_users=300)
    model = result.model
    return model, sel, choose_cf_weight(model, split)  # validation cases only


def load_trained(path: str, cls, data):
    """A model written by a recipe on this data (same catalog, same split seed), and where it came from."""
    model, ids, _ = load_recommender(path)
    if not isinstance(model, cls) or ids != list(data.item_ids):
        raise SystemExit(f"{path} is not a {cls.__name__} trained on the demo catalog")
    log = Path(path).parent / "metrics.jsonl"  # fit's log: its last line holds the final step
    lines = log.read_text().splitlines() if log.is_file() else []
    return model.eval(), {"source": path, "steps": json.loads(lines[-1]).get("step") if lines else None}


def quality(args) -> dict:
    data, split = prepare(None, seed=0)
    out = {}
    if args.sasrec_model:
        sas, extra = load_trained(args.sasrec_model, SASRec, data)
    else:
        t = time.time()
        sas, sel = train_sasrec(split, args.sasrec_steps, f"{args.work}/sasrec")
        extra = {"valid_best_ndcg@10": sel.best, "train_seconds": time.time() - t, "steps": args.sasrec_steps}
    out["SASRec"] = {"test": evaluate(sas, split, "test")["summary"], **extra}
    emb = item_embeddings(data, progress=False)
    t = time.time()
    setrec, sel, chosen = train_setrec(split, emb, sas, args.setrec_steps, f"{args.work}/setrec")
    out["SETRec"] = {"test": evaluate(setrec, split, "test")["summary"], "valid_best_ndcg@10_subset": sel.best,
                     "cf_weight_chosen_on_valid": chosen["weight"], "train_seconds": time.time() - t,
                     "steps": args.setrec_steps, "cf_source": "the SASRec row's model"}
    if args.recgpt_model:  # a model trained by recipes/recgpt.py on this data (same split seed): evaluate it
        model, extra = load_trained(args.recgpt_model, RecGPT, data)
        extra["item_tokens"] = model.items.table_stats()
    else:
        t = time.time()
        tok = train_item_tokenizer(emb, ItemTokenizerConfig(embed_dim=emb.shape[1]), f"{args.work}/tok", steps=300,
                                   progress=False)
        cfg = RecGPTConfig(tokenizer=tok.config)
        model = RecGPT(cfg)
        model.set_catalog(tok, emb)
        result, sel = train_recommender(model, split, TrainConfig(output_dir=f"{args.work}/recgpt",
                                        max_steps=args.recgpt_steps, **COMMON), cfg.max_items, eval_users=300)
        model = result.model
        extra = {"valid_best_ndcg@10_subset": sel.best, "train_seconds": time.time() - t, "steps": args.recgpt_steps,
                 "item_tokens": tok.table_stats()}
    out["RecGPT"] = {"test": evaluate(model.eval(), split, "test")["summary"], **extra}
    out["split"] = split.summary()
    return out, sas, model, setrec, split, emb


class ColdSplit(Split):
    """The same leave-one-out cases, but training sequences never contain the `cold` items."""

    def __init__(self, split: Split, cold: np.ndarray):
        super().__init__(split.sequences, split.num_items, split.too_short)
        self.cold = cold

    def train_sequences(self):
        return [s[~np.isin(s, self.cold)] for s in super().train_sequences()]


def by_group(model, split: Split, cold: np.ndarray) -> dict:
    """Test metrics (with CIs) over all cases, and over the cases whose target is warm / cold."""
    r = evaluate(model, split, "test")
    _, _, targets = split.cases("test")
    is_cold = np.isin(targets, cold)
    out = {"all": r["summary"]}
    for name, sel in (("warm", ~is_cold), ("cold", is_cold)):
        out[name] = {"cases": int(sel.sum()), **summarize(metrics_from_ranks(r["ranks"][sel]), n_boot=1000)}
    return out


def cold_start(args, split: Split, emb: torch.Tensor) -> dict:
    rng = np.random.default_rng(0)
    cold = np.sort(rng.choice(split.num_items, size=int(args.cold_fraction * split.num_items), replace=False))
    cs = ColdSplit(split, cold)
    sas, _ = train_sasrec(cs, args.cold_sasrec_steps, f"{args.work}/cold_sasrec")
    setrec, _, chosen = train_setrec(cs, emb, sas, args.setrec_steps, f"{args.work}/cold_setrec", cold=cold)
    return {"cold_items": int(len(cold)), "cold_fraction": args.cold_fraction, "sasrec_steps": args.cold_sasrec_steps,
            "setrec_steps": args.setrec_steps,
            "SASRec": by_group(sas, cs, cold), "SETRec": {**by_group(setrec, cs, cold),
                                                           "cf_weight_chosen_on_valid": chosen["weight"]}}


def _time(fn) -> float:
    """Seconds of one call after a warm-up call (the warm-up builds caches a scorer keeps)."""
    return best_time(fn, repeats=1)[0]


def throughput(recgpt: RecGPT, setrec: SETRec, item_vecs: np.ndarray, user_vecs: np.ndarray, hists,
               k: int = 10) -> dict:
    """Users/s, ms per user and peak memory of RecGPT beam search, SETRec (one generation pass + inner-product
    top-K: brute force below `faiss_min_items`, a cached faiss flat index above) and a faiss flat IP top-K (same
    users; the faiss peer gets its user vectors for free, so this favours faiss)."""
    index = faiss.IndexFlatIP(item_vecs.shape[1])
    index.add(item_vecs)
    _ = recgpt.index  # trie built once, outside the timing (part of loading the model)
    setrec.recommend(hists[:1], k=k)  # likewise SETRec's catalog table (and faiss index): built once, then cached
    with PeakRSS() as m1:
        t_beam = _time(lambda: recgpt.recommend(hists, k=k, beam=max(k, recgpt.config.beam)))
    with PeakRSS() as m3:
        t_set = _time(lambda: setrec.recommend(hists, k=k))
    with PeakRSS() as m2:
        t_faiss = _time(lambda: index.search(user_vecs, k + 50))  # +50: room to drop seen items, as scoring must
    n = len(hists)
    return {"users": n, "items": int(item_vecs.shape[0]), "recgpt_beam_users_per_s": n / t_beam,
            "setrec_users_per_s": n / t_set, "faiss_flat_users_per_s": n / t_faiss,
            "recgpt_ms_per_user": 1e3 * t_beam / n, "setrec_ms_per_user": 1e3 * t_set / n,
            "speed_ratio_setrec_over_recgpt": t_beam / t_set, "speed_ratio_beam_over_faiss": t_faiss / t_beam,
            "setrec_uses_faiss": setrec.num_items >= setrec.config.faiss_min_items,
            "recgpt_peak_mib": m1.mib, "setrec_peak_mib": m3.mib, "faiss_peak_mib": m2.mib}


def synthetic_recgpt(n_items: int, embed_dim: int = 48, seed: int = 0) -> RecGPT:
    """An (untrained) RecGPT over `n_items` random unique codes: decoding cost does not depend on the weights."""
    g = torch.Generator().manual_seed(seed)
    tc = ItemTokenizerConfig(embed_dim=embed_dim, n_chunks=3, levels=(8, 6, 5), hidden=32, max_suffix=64)
    prefix = torch.randint(0, 240, (n_items, 3), generator=g)
    tok = ItemTokenizer(tc)
    tok._append(prefix)
    model = RecGPT(replace(RecGPTConfig(), tokenizer=tok.config, dropout=0.0))
    model.set_catalog(tok, torch.randn(n_items, embed_dim, generator=g))
    return model.eval()


def synthetic_setrec(n_items: int, embed_dim: int = 48, seed: int = 0) -> SETRec:
    """An (untrained) SETRec over `n_items` random items: scoring cost does not depend on the weights."""
    g = torch.Generator().manual_seed(seed)
    model = SETRec(replace(SETRecConfig(), embed_dim=embed_dim, cf_dim=64, dropout=0.0))
    model.set_catalog(torch.randn(n_items, embed_dim, generator=g), torch.randn(n_items, 64, generator=g))
    return model.eval()


def print_cold(c: dict) -> None:
    print(format_table({f"{m} {g} ({c[m][g]['cases']})": {k: v for k, v in c[m][g].items() if k != "cases"}
                        for m in ("SASRec", "SETRec") for g in ("warm", "cold")}))


def main(argv=None):
    p = parser(__doc__, out="recsys.json")
    p.add_argument("--sasrec-steps", type=int, default=800)
    p.add_argument("--recgpt-steps", type=int, default=1200)
    p.add_argument("--setrec-steps", type=int, default=300)
    p.add_argument("--sasrec-model", default=None,
                   help="evaluate this SASRec (e.g. outputs/sasrec/model from the default recipe) instead of training")
    p.add_argument("--recgpt-model", default=None,
                   help="evaluate this RecGPT (e.g. outputs/recgpt/model from the default recipe) instead of training")
    p.add_argument("--cold-fraction", type=float, default=0.2)
    p.add_argument("--cold-sasrec-steps", type=int, default=300,
                   help="SASRec steps on the cold split (its item table supplies SETRec's CF tokens, as in the recipe)")
    p.add_argument("--skip-cold", action="store_true")
    p.add_argument("--large-items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=256)
    p.add_argument("--work", default="outputs/bench_recsys")
    p.add_argument("--skip-quality", action="store_true",
                   help="only the synthetic-catalog throughput; other results in --out are kept")
    p.add_argument("--cold-only", action="store_true",
                   help="rerun only the cold-start part and update it in the existing --out JSON")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    result = {"threads": torch.get_num_threads()}
    if args.cold_only:
        data, split = prepare(None, seed=0)
        c = cold_start(args, split, item_embeddings(data, progress=False))
        print_cold(c)
        result = {**json.loads(Path(args.out).read_text()), "cold_start": c}  # read now: others may have written
        write_json(args.out, result)
        print(f"-> {args.out}")
        return
    if not args.skip_quality:
        q, sas, recgpt, setrec, split, emb = quality(args)
        result["quality"] = q
        print(format_table({name: q[name]["test"] for name in ("SASRec", "RecGPT", "SETRec")}))
        _, hists, _ = split.cases("test")
        hists = hists[: args.users]
        with torch.no_grad():
            uv = sas.user_vectors(hists).numpy().astype(np.float32)
            iv = sas.item_vectors().detach().numpy().astype(np.float32)
        result["throughput_demo"] = throughput(recgpt.eval(), setrec.eval(), iv, uv, hists)
        if not args.skip_cold:
            result["cold_start"] = c = cold_start(args, split, emb)
            print_cold(c)
    big = synthetic_recgpt(args.large_items)
    big_set = synthetic_setrec(args.large_items)
    rng = np.random.default_rng(0)
    hists = [rng.integers(0, args.large_items, size=int(rng.integers(5, 30))).tolist() for _ in range(args.users)]
    d = 64
    iv = rng.standard_normal((args.large_items, d), dtype=np.float32)
    uv = rng.standard_normal((len(hists), d), dtype=np.float32)
    result["throughput_1m"] = throughput(big, big_set, iv, uv, hists)
    for key in ("throughput_demo", "throughput_1m"):
        if key in result:
            r = result[key]
            print(f"{key}: {r['items']} items, {r['users']} users | RecGPT beam {r['recgpt_beam_users_per_s']:.0f} "
                  f"users/s ({r['recgpt_peak_mib']:.0f} MiB) | SETRec {r['setrec_users_per_s']:.0f} users/s "
                  f"({r['setrec_peak_mib']:.0f} MiB, x{r['speed_ratio_setrec_over_recgpt']:.1f} vs beam) | faiss flat "
                  f"{r['faiss_flat_users_per_s']:.0f} users/s ({r['faiss_peak_mib']:.0f} MiB) | ratio beam/faiss "
                  f"{r['speed_ratio_beam_over_faiss']:.2f}x")
    if (args.skip_quality or args.skip_cold) and Path(args.out).is_file():  # keep what this run did not redo
        result = {**json.loads(Path(args.out).read_text()), **result}
    write_json(args.out, result)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
