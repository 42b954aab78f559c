"""Scoring throughput, latency per user and peak memory: RecGPT's catalog-constrained beam search, SETRec's one-pass
generation + inner-product top-K and a faiss flat top-K over item embeddings, same histories, on the demo catalog and
on a synthetic large catalog (timed on a quiet machine)."""

from __future__ import annotations

import faiss
import numpy as np
import torch

from benchmarks.common import PeakRSS, best_time
from gentok.config import replace
from recsys.data import Split
from recsys.item_tokens import ItemTokenizer, ItemTokenizerConfig
from recsys.models.recgpt import RecGPT, RecGPTConfig
from recsys.models.sasrec import SASRec
from recsys.models.setrec import SETRec, SETRecConfig


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


def throughput_demo(sas: SASRec, recgpt: RecGPT, setrec: SETRec, split: Split, users: int) -> dict:
    _, hists, _ = split.cases("test")
    hists = hists[:users]
    with torch.no_grad():
        uv = sas.user_vectors(hists).numpy().astype(np.float32)
        iv = sas.item_vectors().detach().numpy().astype(np.float32)
    return throughput(recgpt.eval(), setrec.eval(), iv, uv, hists)


def throughput_large(n_items: int, users: int) -> dict:
    big, big_set = synthetic_recgpt(n_items), synthetic_setrec(n_items)
    rng = np.random.default_rng(0)
    hists = [rng.integers(0, n_items, size=int(rng.integers(5, 30))).tolist() for _ in range(users)]
    iv = rng.standard_normal((n_items, 64), dtype=np.float32)
    uv = rng.standard_normal((len(hists), 64), dtype=np.float32)
    return throughput(big, big_set, iv, uv, hists)
