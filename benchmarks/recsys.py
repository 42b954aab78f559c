"""Recommendation benchmark on the demo split (MovieLens latest-small), at equal training compute.

* equal compute: SASRec, RecGPT with text item codes, RecGPT with collaborative item codes (text fused with SASRec
  item embeddings) and SETRec are trained to the same budgets of training CPU-seconds (`--budgets`): process CPU time
  (`time.process_time`) with one thread, validation passes not counted. A model whose item table or codes need a
  trained SASRec (RecGPT collaborative, SETRec) spends half of its budget on that SASRec (the SASRec row of half the
  budget) and the rest on its own training (the item tokenizer's training included). Text embeddings are computed
  once for all text models and not counted. Each run's step count comes from a short timing probe of that model
  (`gentok.training.fit` has no time limit), and a CPU-time check in the loss stops training at the budget if it runs
  over. Test Recall/NDCG@10 (bootstrap CIs) of the weights selected on validation NDCG@10 (300 users), plus a
  popularity baseline;
* cold start: 20% of the catalog (seeded, uniform) is removed from every training sequence; every model is retrained
  at `--cold-budget` and its test metrics are split by whether the target is a warm or a cold item, against
  popularity over all items and a popularity baseline that ranks the cold items only;
* zero-shot: the catalog is split into two disjoint halves (seeded permutation); RecGPT and SETRec are trained on the
  interactions with items of half A and evaluated on half B's interactions with B's items added from their text
  (`recsys.catalog.with_catalog`, what `recsys evaluate --catalog` does), against popularity on B and a SASRec
  trained on B at the same budget;
* scoring throughput / latency per user / peak memory (not rerun with `--skip-throughput`, which keeps those keys of
  the existing JSON): RecGPT's catalog-constrained beam search, SETRec's one-pass generation + inner-product top-K,
  and a faiss brute-force top-K over item embeddings, same histories, on the demo catalog and on a synthetic
  1,000,000-item catalog.

    python -m benchmarks.recsys --skip-throughput      # quality parts; writes benchmarks/results/recsys.{json,png}
    python -m benchmarks.recsys --only cold --skip-throughput   # redo one part (others kept in the JSON)
    python -m benchmarks.recsys --only equal --budgets 80 --skip-throughput --work outputs/b80   # one budget; parts
        # and budgets can run as parallel processes (separate --work): each merges its rows into the one JSON
    python -m benchmarks.recsys                         # everything, timings included (on a quiet machine): the
        # demo-catalog throughput uses the largest budget's models
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from torch import nn

from benchmarks.common import PeakRSS, best_time, parser, pyplot, save_figure, write_json
from gentok.config import replace
from gentok.training import TrainConfig, fit
from recsys.catalog import Catalog, with_catalog
from recsys.data import RecData, Split, leave_one_out
from recsys.evaluation import SelectOnValidation, evaluate
from recsys.item_tokens import ItemTokenizer, ItemTokenizerConfig
from recsys.metrics import format_table, metrics_from_ranks, summarize
from recsys.models.base import Recommender
from recsys.models.recgpt import RecGPT, RecGPTConfig
from recsys.models.sasrec import SASRec, SASRecConfig
from recsys.models.setrec import SETRec, SETRecConfig, choose_cf_weight
from recsys.pipeline import item_embeddings, prepare, train_item_tokenizer, warm_items
from recsys.train import NextItemWindows

# the recipes' training settings (batch sizes: SASRec and SETRec 32, RecGPT 64)
COMMON = dict(lr=2e-3, min_lr_ratio=0.1, weight_decay=0.01, clip_grad=1.0, checkpoint_every=0, progress=False,
              log_every=50, num_threads=1)
BATCH = {"SASRec": 32, "RecGPT": 64, "SETRec": 32}
MODELS = ("SASRec", "RecGPT (text codes)", "RecGPT (collaborative codes)", "SETRec")
EVAL_USERS = 671  # validation users per selection pass (all of the demo split's)
EVALS = 5  # validation passes per run (the last at the end of training)
RUN = {"eval_users": EVAL_USERS}  # what the command line changed
PROBES: dict = {}  # (kind, catalog size, max_len) -> CPU seconds per step


# -- training to a CPU-time budget -------------------------------------------------------------------------------------
class BudgetReached(Exception):
    """Raised inside the loss when a run has used its training CPU time."""


class CPUClock:
    """Training CPU seconds (`time.process_time`) counted between loss calls, with validation passes paused."""

    def __init__(self, budget: float):
        self.budget, self.used, self._last = budget, 0.0, None

    def tick(self) -> None:
        now = time.process_time()
        if self._last is not None:
            self.used += now - self._last
        self._last = now
        if self.used >= self.budget:
            raise BudgetReached

    @contextlib.contextmanager
    def paused(self):
        now = time.process_time()
        if self._last is not None:
            self.used += now - self._last
        try:
            yield
        finally:
            if self._last is not None:
                self._last = time.process_time()


class SelectOnServedLists(SelectOnValidation):
    """Model selection by validation NDCG@10 of the top-10 lists `model.recommend` serves (seen items excluded):
    exact top-10 for SASRec and SETRec, catalog-constrained beam search for RecGPT, whose exact full ranking (every
    item's probability through the trie) costs ~0.1 s per user here. Test metrics stay exact full ranking."""

    def __call__(self, model, loader) -> dict:
        _, hists, targets = self.split.cases("valid")
        hists, targets = hists[: self.max_users], targets[: self.max_users]
        was = model.training
        model.eval()
        ranks = []
        try:
            for s in range(0, len(hists), self.batch_size):
                items, _ = model.recommend(hists[s: s + self.batch_size], k=10)
                hit = items == torch.as_tensor(targets[s: s + self.batch_size])[:, None]
                ranks.append(torch.where(hit.any(1), hit.float().argmax(1) + 1, model.num_items + 1))
        finally:
            model.train(was)
        per_user = metrics_from_ranks(torch.cat(ranks).numpy(), ks=(5, 10))
        metrics = {k: float(v.mean()) for k, v in per_user.items()}
        self.history.append(metrics)
        if metrics[self.metric] > self.best:
            self.best = metrics[self.metric]
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        return metrics


def seconds_per_step(model: nn.Module, windows: NextItemWindows, batch_size: int, steps: int = 6) -> float:
    """CPU seconds of one optimizer step (forward, backward, AdamW) of a copy of `model`, after 2 warm-up steps."""
    probe = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-4, fused=True)
    g = torch.Generator().manual_seed(0)
    for i in range(steps + 2):
        if i == 2:
            start = time.process_time()
        batch = windows.windows[torch.randint(0, len(windows), (batch_size,), generator=g)]
        loss = probe(batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(probe.parameters(), 1.0)
        opt.step()
    return (time.process_time() - start) / steps


def train_budget(model: nn.Module, split: Split, budget: float, kind: str, max_len: int, work: Path) -> dict:
    """Train `model` (in place) for `budget` CPU seconds; keeps the weights with the best validation NDCG@10.
    Returns what the run did: steps planned / done, CPU seconds used, whether the budget stopped it."""
    windows = NextItemWindows(split, max_len)
    bs = BATCH[kind]
    key = (kind, split.num_items, max_len)
    if key not in PROBES:  # the step cost depends on the model and the catalog size, not on the budget
        PROBES[key] = seconds_per_step(model, windows, bs)
    per_step = PROBES[key]
    steps = max(10, int(0.9 * budget / per_step))  # a margin: steps in `fit` cost a little more than in the probe
    clock = CPUClock(budget)
    selector = SelectOnServedLists(split, max_users=RUN["eval_users"], batch_size=64)
    done = {"steps": 0}

    def loss_fn(m, batch):
        clock.tick()
        done["steps"] += 1
        out = m(batch)
        return out.loss, out.metrics

    def eval_fn(m, loader):
        with clock.paused():
            return selector(m, loader)

    if work.exists():
        shutil.rmtree(work)  # fit resumes from checkpoints in its output dir: every run starts fresh
    tcfg = TrainConfig(output_dir=str(work), max_steps=steps, batch_size=bs, warmup_steps=min(30, steps // 10),
                       eval_every=max(1, steps // (EVALS - 1)), **COMMON)
    stopped = False
    try:
        fit(model, windows, tcfg, eval_data=windows, eval_fn=eval_fn, loss_fn=loss_fn)
    except BudgetReached:
        stopped = True
        selector(model, None)  # the weights reached at the budget are a candidate too
    selector.restore(model)
    model.eval()
    shutil.rmtree(work, ignore_errors=True)
    return {"budget_s": budget, "cpu_s": round(clock.used, 2), "seconds_per_step": per_step, "steps_planned": steps,
            "steps_done": done["steps"], "stopped_by_budget": stopped,
            "valid_ndcg@10_best": selector.best}


# -- the models -----------------------------------------------------------------------------------------------------
def make_sasrec(split: Split) -> SASRec:
    torch.manual_seed(0)
    return SASRec(SASRecConfig(num_items=split.num_items))


def sasrec_at(budget: float, split: Split, work: Path, cache: dict) -> tuple[SASRec, dict]:
    """The SASRec trained for `budget` seconds on `split` (trained once per (split, budget), then reused)."""
    key = (id(split), budget)
    if key not in cache:
        model = make_sasrec(split)
        info = train_budget(model, split, budget, "SASRec", model.config.max_len, work / f"sasrec_{budget:g}")
        cache[key] = (model, info)
    return cache[key]


def make_recgpt(split: Split, emb: torch.Tensor, budget: float, work: Path, cf: SASRec | None, cf_weight: float,
                id_embedding: bool) -> tuple[RecGPT, dict]:
    """RecGPT with item codes from text (cf None) or text + `cf`'s item embeddings; the tokenizer's training time
    (CPU seconds) is returned so the caller charges it to the budget."""
    tok_cfg = ItemTokenizerConfig(embed_dim=emb.shape[1])
    kw = {}
    if cf is not None:
        kw = {"cf": cf.item_vectors().detach().cpu(), "has_cf": warm_items(split)}
        tok_cfg = replace(tok_cfg, cf_dim=cf.config.dim, cf_weight=cf_weight)
    torch.manual_seed(0)
    t = time.process_time()
    shutil.rmtree(work / "tok", ignore_errors=True)
    tok = train_item_tokenizer(emb, tok_cfg, work / "tok", steps=300, progress=False, **kw)
    tok_s = time.process_time() - t
    shutil.rmtree(work / "tok", ignore_errors=True)
    torch.manual_seed(0)
    model = RecGPT(RecGPTConfig(tokenizer=tok.config, id_embedding=id_embedding))
    model.set_catalog(tok, emb)
    return model, {"tokenizer_cpu_s": round(tok_s, 2), "item_tokens": tok.table_stats()}


def train_model(name: str, split: Split, emb: torch.Tensor, budget: float, work: Path, cache: dict, opts: dict,
                cold: np.ndarray | None = None) -> tuple[nn.Module, dict]:
    """One of `MODELS` trained at `budget` total CPU seconds (CF source and tokenizer included)."""
    if name == "SASRec":
        model, info = sasrec_at(budget, split, work, cache)
        return model, {**info, "total_cpu_s": info["cpu_s"]}
    sas, sas_info = (None, None)
    own = budget
    if name in ("RecGPT (collaborative codes)", "SETRec"):
        sas, sas_info = sasrec_at(budget / 2, split, work, cache)
        own = budget - sas_info["cpu_s"]
    extra = {"cf_source": {"model": "SASRec", "budget_s": budget / 2, "cpu_s": sas_info["cpu_s"]}} if sas else {}
    if name.startswith("RecGPT"):
        model, info = make_recgpt(split, emb, budget, work, sas if "collab" in name else None, opts["cf_weight"],
                                  opts["id_embedding"])
        own -= info["tokenizer_cpu_s"]
        run = train_budget(model, split, own, "RecGPT", model.config.max_items, work / "recgpt")
        extra.update(info, cf_weight=opts["cf_weight"] if sas else None, id_embedding=opts["id_embedding"])
    else:
        torch.manual_seed(0)
        model = SETRec(SETRecConfig(embed_dim=emb.shape[1], cf_dim=sas.config.dim))
        model.set_catalog(emb, sas.item_vectors().detach().cpu())
        if cold is not None:
            model.drop_cf(torch.from_numpy(cold))
        run = train_budget(model, split, own, "SETRec", model.config.max_items, work / "setrec")
        extra["cf_weight_chosen_on_valid"] = choose_cf_weight(model, split)["weight"]
    total = run["cpu_s"] + (sas_info["cpu_s"] if sas else 0) + extra.get("tokenizer_cpu_s", 0)
    return model, {**run, "budget_s": budget, "own_budget_s": round(own, 2), "total_cpu_s": round(total, 2), **extra}


class Popularity(Recommender, nn.Module):
    """Scores every item by a fixed count (training interactions by default); `only` restricts the ranking to those
    items (the others score -1, below every counted item)."""

    def __init__(self, counts: np.ndarray, only: np.ndarray | None = None):
        super().__init__()
        s = torch.as_tensor(counts, dtype=torch.float32)
        if only is not None:
            keep = torch.zeros(len(s), dtype=torch.bool)
            keep[torch.as_tensor(only)] = True
            s = torch.where(keep, s, torch.full_like(s, -1.0))
        self.register_buffer("scores", s)

    @property
    def num_items(self) -> int:
        return len(self.scores)

    @torch.no_grad()
    def score_all(self, histories):
        return self.scores[None].expand(len(histories), -1)


def train_counts(split: Split) -> np.ndarray:
    return np.bincount(np.concatenate([s for s in split.train_sequences()] + [np.zeros(0, np.int64)]),
                       minlength=split.num_items)


def test_row(model, split: Split, info: dict | None = None) -> dict:
    return {"test": evaluate(model, split, "test", batch_size=32)["summary"], **(info or {})}


# -- parts ------------------------------------------------------------------------------------------------------------
def equal_compute(args, split: Split, emb: torch.Tensor, opts: dict) -> tuple[dict, dict]:
    work, cache = Path(args.work) / "equal", {}
    rows: dict = {"Popularity": test_row(Popularity(train_counts(split)), split, {"total_cpu_s": 0.0})}
    last = {}
    for budget in args.budgets:
        for name in MODELS:
            t = time.time()
            model, info = train_model(name, split, emb, budget, work, cache, opts)
            rows.setdefault(name, {})[f"{budget:g}"] = row = test_row(model, split, info)
            last[name] = model
            print(f"[{budget:g}s] {name}: test NDCG@10 {row['test']['ndcg@10']['mean']:.4f} Recall@10 "
                  f"{row['test']['recall@10']['mean']:.4f} | valid {info['valid_ndcg@10_best']:.4f} | "
                  f"{info['total_cpu_s']:.1f} CPU s, {info['steps_done']} steps, {time.time() - t:.0f} s wall",
                  flush=True)
    rows["budgets_s"] = list(args.budgets)
    rows["settings"] = opts
    return rows, last


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
           "Popularity": by_group(Popularity(train_counts(cs)), cs, cold),
           "Popularity (cold items only)": by_group(Popularity(seen, only=cold), cs, cold,
                                                    {"counts": "occurrences in the test histories (model inputs)"})}
    for name in MODELS:
        model, info = train_model(name, cs, emb, args.cold_budget, work, cache, opts, cold=cold)
        out[name] = by_group(model, cs, cold, info)
        print(f"cold {name}: cold-target Recall@10 {out[name]['cold']['recall@10']['mean']:.4f}, warm "
              f"{out[name]['warm']['recall@10']['mean']:.4f}", flush=True)
    return out


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
           "Popularity (B)": test_row(Popularity(train_counts(split_b)), split_b)}
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


# -- throughput (unchanged protocol; timed separately on a quiet machine) --------------------------------------------
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


# -- report -----------------------------------------------------------------------------------------------------------
def print_equal(rows: dict) -> None:
    table = {"Popularity": rows["Popularity"]["test"]}
    for b in rows["budgets_s"]:
        for name in MODELS:
            table[f"{name[:14]} {b:g}s"] = rows[name][f"{b:g}"]["test"]
    print(format_table(table, metrics=("recall@10", "ndcg@10")))


def plot(result: dict, path: Path) -> None:
    rows = result["equal_compute"]
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("ndcg@10", "recall@10")):
        for name in MODELS:
            budgets = rows["budgets_s"]
            m = [rows[name][f"{b:g}"]["test"][metric] for b in budgets]
            mean = np.array([v["mean"] for v in m])
            err = np.array([[v["mean"] - v["ci_low"], v["ci_high"] - v["mean"]] for v in m]).T
            ax.errorbar(budgets, mean, yerr=err, marker="o", capsize=3, label=name)
        pop = rows["Popularity"]["test"][metric]
        ax.axhline(pop["mean"], color="gray", linestyle="--", label="Popularity")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(rows["budgets_s"], [f"{b:g}" for b in rows["budgets_s"]])
        ax.set_xlabel("training CPU seconds (one thread)")
        ax.set_ylabel(f"test {metric} (95% CI)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("MovieLens latest-small, leave-one-out, full ranking: quality at equal training compute")
    fig.tight_layout()
    save_figure(fig, path)


def merge(old: dict, new: dict) -> dict:
    """The existing JSON updated with this run's parts; equal-compute rows of other budgets are kept, so budgets can
    run as separate processes (`--only equal --budgets 100`). The old `quality` key is superseded by equal_compute."""
    result = {k: v for k, v in {**old, **new}.items() if k not in ("quality", "machine")}  # machine: this run's
    if "equal_compute" in new and "equal_compute" in old:
        eq = {**old["equal_compute"], **new["equal_compute"]}
        for name in MODELS:
            eq[name] = {**old["equal_compute"].get(name, {}), **new["equal_compute"].get(name, {})}
        eq["budgets_s"] = sorted({*old["equal_compute"]["budgets_s"], *new["equal_compute"]["budgets_s"]})
        result["equal_compute"] = eq
    return result


def main(argv=None):
    p = parser(__doc__, out="recsys.json")
    p.add_argument("--budgets", type=float, nargs="+", default=[25.0, 50.0, 100.0],
                   help="training CPU-second budgets of the equal-compute comparison")
    p.add_argument("--cold-budget", type=float, default=50.0)
    p.add_argument("--zero-budget", type=float, default=50.0)
    p.add_argument("--cold-fraction", type=float, default=0.2)
    p.add_argument("--cf-weight", type=float, default=1.0, help="CF weight of RecGPT's collaborative item codes")
    p.add_argument("--id-embedding", action="store_true", help="RecGPT adds a learned item-id embedding")
    p.add_argument("--only", choices=("equal", "cold", "zero", "throughput"), action="append", default=None,
                   help="run only these parts (repeatable); the JSON keeps the others")
    p.add_argument("--skip-throughput", action="store_true",
                   help="do not time scoring; the throughput keys of the existing --out JSON are kept")
    p.add_argument("--large-items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=256)
    p.add_argument("--work", default="outputs/bench_recsys")
    p.add_argument("--eval-users", type=int, default=EVAL_USERS, help="validation users per selection pass")
    args = p.parse_args(argv)
    RUN["eval_users"] = args.eval_users
    torch.set_num_threads(1)
    torch.manual_seed(0)
    parts = set(args.only or ("equal", "cold", "zero", "throughput"))
    if args.skip_throughput:
        parts.discard("throughput")
    opts = {"cf_weight": args.cf_weight, "id_embedding": args.id_embedding}
    data, split = prepare(None, seed=0)
    emb = item_embeddings(data, progress=False)
    result: dict = {"threads": torch.get_num_threads(), "budget_clock": "time.process_time, one thread",
                    "valid_users_per_selection": args.eval_users}
    models = {}
    if "equal" in parts:
        result["equal_compute"], models = equal_compute(args, split, emb, opts)
        print_equal(result["equal_compute"])
    if "cold" in parts:
        result["cold_start"] = cold_start(args, split, emb, opts)
    if "zero" in parts:
        result["zero_shot"] = zero_shot(args, data, emb, opts)
    if "throughput" in parts:
        if not models:
            raise SystemExit("--only throughput needs the equal-compute models: add --only equal")
        result["throughput_demo"] = throughput_demo(models["SASRec"], models["RecGPT (text codes)"],
                                                    models["SETRec"], split, args.users)
        result["throughput_1m"] = throughput_large(args.large_items, args.users)
    out = Path(args.out)
    # parts run as parallel processes merge into one JSON, one at a time (the lock file stays, outside the results)
    key = hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:12]
    lock_path = Path(tempfile.gettempdir()) / f"gentok-recsys-{key}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = merge(json.loads(out.read_text()) if out.is_file() else {}, result)
        write_json(out, result)
        if "equal_compute" in result:
            plot(result, out.with_suffix(".png"))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
