"""Recommendation benchmark: quality (SASRec vs RecGPT on the demo split, test metrics of the validation-selected
weights, bootstrap CIs) and scoring throughput / peak memory (RecGPT's catalog-constrained beam search vs a faiss
brute-force inner-product top-K over item embeddings, same histories) on the demo catalog and a synthetic
1,000,000-item catalog.

    python benchmarks/recsys.py                       # writes benchmarks/results/recsys.json
    python benchmarks/recsys.py --sasrec-steps 800 --recgpt-steps 600
"""

from __future__ import annotations

import os
import sys

# this file is named like the package it measures: keep its own folder off the import path
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse  # noqa: E402
import threading  # noqa: E402
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from gentok.config import replace
from gentok.hub import atomic_write_json
from gentok.training import TrainConfig
from recsys.evaluation import evaluate
from recsys.item_tokens import ItemTokenizer, ItemTokenizerConfig
from recsys.metrics import format_table
from recsys.models.recgpt import RecGPT, RecGPTConfig
from recsys.models.sasrec import SASRec, SASRecConfig
from recsys.pipeline import item_embeddings, prepare, train_item_tokenizer, train_recommender

OUT = Path(__file__).parent / "results" / "recsys.json"


class PeakRSS:
    """Peak resident memory above the starting level while the block runs (sampled from /proc every 5 ms)."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self.stop = False
        self.t = threading.Thread(target=self._watch, daemon=True)
        self.t.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) * 1024
        return 0

    def _watch(self):
        while not self.stop:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.stop = True
        self.t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


def quality(args) -> dict:
    data, split = prepare(None, seed=0)
    out = {}
    common = dict(batch_size=64, lr=2e-3, warmup_steps=30, weight_decay=0.01, eval_every=100, checkpoint_every=0,
                  progress=False, log_every=50)
    sas_cfg = SASRecConfig(num_items=data.num_items)
    t = time.time()
    sas, sel = train_recommender(SASRec(sas_cfg), split, TrainConfig(output_dir=f"{args.work}/sasrec",
                                 max_steps=args.sasrec_steps, **{**common, "batch_size": 32}), sas_cfg.max_len)
    out["SASRec"] = {"test": evaluate(sas, split, "test")["summary"], "valid_best_ndcg@10": sel.best,
                     "train_seconds": time.time() - t, "steps": args.sasrec_steps}
    emb = item_embeddings(data, progress=False)
    t = time.time()
    tok = train_item_tokenizer(emb, ItemTokenizerConfig(embed_dim=emb.shape[1]), f"{args.work}/tok", steps=300,
                               progress=False)
    cfg = RecGPTConfig(tokenizer=tok.config)
    model = RecGPT(cfg)
    model.set_catalog(tok, emb)
    model, sel = train_recommender(model, split, TrainConfig(output_dir=f"{args.work}/recgpt",
                                   max_steps=args.recgpt_steps, **common), cfg.max_items, eval_users=300)
    out["RecGPT"] = {"test": evaluate(model, split, "test")["summary"], "valid_best_ndcg@10_subset": sel.best,
                     "train_seconds": time.time() - t, "steps": args.recgpt_steps, "item_tokens": tok.table_stats()}
    out["split"] = split.summary()
    return out, sas, model, split


def _time(fn, reps=1):
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def throughput(model: RecGPT, item_vecs: np.ndarray, user_vecs: np.ndarray, hists, k: int = 10) -> dict:
    """Users/s and peak memory of beam search vs faiss flat IP top-K (same users; the faiss peer gets user vectors
    for free, so this favours faiss)."""
    index = faiss.IndexFlatIP(item_vecs.shape[1])
    index.add(item_vecs)
    _ = model.index  # trie built once, outside the timing (part of loading the model)
    with PeakRSS() as m1:
        t_beam = _time(lambda: model.recommend(hists, k=k, beam=max(k, model.config.beam)))
    with PeakRSS() as m2:
        t_faiss = _time(lambda: index.search(user_vecs, k + 50))  # +50: room to drop seen items, as scoring must
    n = len(hists)
    return {"users": n, "items": int(item_vecs.shape[0]), "recgpt_beam_users_per_s": n / t_beam,
            "faiss_flat_users_per_s": n / t_faiss, "speed_ratio_beam_over_faiss": t_faiss / t_beam,
            "recgpt_peak_mib": m1.mib, "faiss_peak_mib": m2.mib}


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


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sasrec-steps", type=int, default=800)
    p.add_argument("--recgpt-steps", type=int, default=600)
    p.add_argument("--large-items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=256)
    p.add_argument("--work", default="outputs/bench_recsys")
    p.add_argument("--skip-quality", action="store_true")
    args = p.parse_args()
    torch.manual_seed(0)
    result = {"threads": torch.get_num_threads()}
    if not args.skip_quality:
        q, sas, recgpt, split = quality(args)
        result["quality"] = q
        print(format_table({name: q[name]["test"] for name in ("SASRec", "RecGPT")}))
        _, hists, _ = split.cases("test")
        hists = hists[: args.users]
        with torch.no_grad():
            uv = sas.user_vectors(hists).numpy().astype(np.float32)
            iv = sas.item_vectors().detach().numpy().astype(np.float32)
        result["throughput_demo"] = throughput(recgpt.eval(), iv, uv, hists)
    big = synthetic_recgpt(args.large_items)
    rng = np.random.default_rng(0)
    hists = [rng.integers(0, args.large_items, size=int(rng.integers(5, 30))).tolist() for _ in range(args.users)]
    d = 64
    iv = rng.standard_normal((args.large_items, d), dtype=np.float32)
    uv = rng.standard_normal((len(hists), d), dtype=np.float32)
    result["throughput_1m"] = throughput(big, iv, uv, hists)
    for key in ("throughput_demo", "throughput_1m"):
        if key in result:
            r = result[key]
            print(f"{key}: {r['items']} items, {r['users']} users | RecGPT beam {r['recgpt_beam_users_per_s']:.0f} "
                  f"users/s ({r['recgpt_peak_mib']:.0f} MiB) | faiss flat {r['faiss_flat_users_per_s']:.0f} users/s "
                  f"({r['faiss_peak_mib']:.0f} MiB) | ratio beam/faiss {r['speed_ratio_beam_over_faiss']:.2f}x")
    atomic_write_json(OUT, result)
    print(f"-> {OUT}")


if __name__ == "__main__":
    main()
