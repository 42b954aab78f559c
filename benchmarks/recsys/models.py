"""The models of the recommendation benchmark, each trained to a total CPU-time budget (its CF source and item
tokenizer included), and the test row every part reports."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.recsys.budget import train_budget, train_curve
from gentok.config import replace
from recsys.data import Split
from recsys.evaluation import choose_cf_weight, evaluate
from recsys.item_tokens import ItemTokenizerConfig
from recsys.models.recgpt import PRESETS as RECGPT_PRESETS
from recsys.models.recgpt import RecGPT
from recsys.models.sasrec import PRESETS as SASREC_PRESETS
from recsys.models.sasrec import SASRec
from recsys.models.setrec import PRESETS as SETREC_PRESETS
from recsys.models.setrec import SETRec, SETRecConfig
from recsys.models.setrec_sasrec import SETRecSASRec
from recsys.semantic_ids import SemanticIdConfig
from recsys.train import train_item_tokenizer, warm_items

MODELS = ("SASRec", "RecGPT (text codes)", "RecGPT (collaborative codes)", "SETRec")
CURVE_CLASSES = {"SASRec": SASRec, "SETRec on SASRec": SETRecSASRec, "RecGPT (collaborative codes)": RecGPT,
                 "RecGPT (RQ-VAE codes)": RecGPT}


def make_sasrec(split: Split) -> SASRec:
    torch.manual_seed(0)
    return SASRec(replace(SASREC_PRESETS["small"], num_items=split.num_items))  # the recipe's model


def sasrec_at(budget: float, split: Split, work: Path, cache: dict) -> tuple[SASRec, dict]:
    """The SASRec trained for `budget` seconds on `split` (trained once per (split, budget), then reused)."""
    key = (id(split), budget)
    if key not in cache:
        model = make_sasrec(split)
        info = train_budget(model, split, budget, "SASRec", model.config.max_len, work / f"sasrec_{budget:g}")
        cache[key] = (model, info)
    return cache[key]


def make_recgpt(split: Split, emb: torch.Tensor, budget: float, work: Path, cf: SASRec | None, cf_weight: float,
                id_embedding: bool, codes: str = "fsq") -> tuple[RecGPT, dict]:
    """RecGPT with item codes (FSQ chunk codes, or RQ-VAE semantic ids with `codes="rqvae"`) from text (cf None) or
    text + `cf`'s item embeddings; the tokenizer's training time (CPU seconds) is returned so the caller charges it
    to the budget."""
    tok_cfg = (SemanticIdConfig if codes == "rqvae" else ItemTokenizerConfig)(embed_dim=emb.shape[1])
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
    model = RecGPT(replace(RECGPT_PRESETS["small"], tokenizer=tok.config, id_embedding=id_embedding))  # the recipe's
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


def test_row(model, split: Split, info: dict | None = None) -> dict:
    return {"test": evaluate(model, split, "test", batch_size=32)["summary"], **(info or {})}


def curve_model(name: str, split: Split, emb: torch.Tensor, budget: float, work: Path, cache: dict,
                points: int, patience: int) -> tuple[nn.Module, dict]:
    """One of `CURVE_MODELS` trained in one long run to `budget` CPU seconds of its own, with its learning curve.
    Models built on a SASRec use the SASRec curve's model (`cache["SASRec"]`, trained first) and are charged its
    CPU time: their curve's `total_cpu_s` starts where SASRec's run ended."""
    if name == "SASRec":
        model = make_sasrec(split)
        run = train_curve(model, split, budget, "SASRec", model.config.max_len, work / "sasrec", points, patience)
        cache["SASRec"] = (model, run)
        return model, {**run, "total_cpu_s": run["cpu_s"]}
    sas, sas_run = cache["SASRec"]
    # charged: SASRec's CPU time up to the point whose weights it kept (its best validation point), what a SASRec
    # run to that length would cost
    best = max(sas_run["curve"], key=lambda p: p["valid_ndcg@10"])
    spent = best["cpu_s"]
    extra = {"cf_source": {"model": "SASRec", "cpu_s": spent, "steps": best["step"]}}
    if name == "SETRec on SASRec":
        torch.manual_seed(0)
        model = SETRecSASRec.on(sas, emb, SETREC_PRESETS["small"])
        run = train_curve(model, split, budget, "SETRec", model.config.max_items, work / "setrec", points, patience,
                          spent=spent, prepare=choose_cf_weight)
        extra["cf_weight_chosen_on_valid"] = float(model.cf_weight)
    else:
        codes = "rqvae" if "RQ-VAE" in name else "fsq"
        model, info = make_recgpt(split, emb, budget, work, sas, 1.0, False, codes)
        spent += info["tokenizer_cpu_s"]
        run = train_curve(model, split, budget, "RecGPT", model.config.max_items,
                          work / ("recgpt_rqvae" if codes == "rqvae" else "recgpt"), points, patience,
                          spent=spent)
        extra.update(info)
    return model, {**run, "total_cpu_s": round(run["cpu_s"] + spent, 2), **extra}
