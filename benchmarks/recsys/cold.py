"""Cold start: a fifth of the catalog never appears in training; test metrics split by warm and cold targets, against
popularity and popularity among the cold items; and each model with a popularity prior and a cold bonus
(`recsys.blend`), calibrated on the validation cases.

Cold handling, all chosen on validation: the model's standardized scores plus log-popularity, where popularity is
what a deployed system knows when it scores (item occurrences in the histories being scored, so a cold item is counted
once users have it in their histories); the model weight of warm items is chosen on warm-target cases ranked among
warm items, the one of cold items on cold-target cases ranked among cold items (validation NDCG@10 both); then the cold
bonus is the one with the best validation cold-target Recall@10 among those that keep validation warm-target
Recall@10 within 5% of the same model's without cold handling, or, where one of those reaches the validation
cold-target Recall@10 of popularity among cold items (the issue's bar), the smallest such bonus: the bar at the least
cost to warm targets (`calibrate_cold_bonus`'s `cold_goal`). The full bonus curve is reported (validation and test).

Co-occurrence cold handling (`recsys.models.cooccurrence`): the same histories also say which items occur near which,
so an item-kNN over them ranks cold items per user; its config (window, recency decay, alpha) is chosen on all
validation cases (NDCG@10 among all items: it treats cold and warm items alike). "<model> + co-occurrence" mixes it
into the model's scores of warm items (`recsys.blend.mix_scores`, the share chosen on validation warm-target cases
ranked among warm items) and gives cold items the co-occurrence scores alone, then prior, weights and cold bonus as
above; "<model> + cold co-occurrence" is the same with share 0 (warm items in the model's order, only the cold items
scored by co-occurrence). The bound on warm targets stays relative to the model alone.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import pyplot, save_figure
from benchmarks.recsys.cache import cached_scores
from benchmarks.recsys.models import MODELS, train_model
from recsys.blend import (
    BlendCalibration,
    blend_scores,
    calibrate_cold_bonus,
    calibrate_share,
    calibrate_weight,
    mix_scores,
    model_scores,
    target_ranks_of,
)
from recsys.data import Split
from recsys.metrics import metrics_from_ranks, summarize
from recsys.models.cooccurrence import Cooccurrence, calibrate_cooccurrence
from recsys.models.popularity import history_counts, train_counts

MAX_WARM_LOSS = 0.05  # the bound on what cold handling may cost warm targets (relative Recall@10)


class ColdSplit(Split):
    """The same leave-one-out cases, but training sequences never contain the `cold` items."""

    def __init__(self, split: Split, cold: np.ndarray):
        super().__init__(split.sequences, split.num_items, split.too_short)
        self.cold = cold

    def train_sequences(self):
        return [s[~np.isin(s, self.cold)] for s in super().train_sequences()]


def groups(ranks: np.ndarray, is_cold: np.ndarray) -> dict:
    """Metrics (with CIs) over all cases, and over the cases whose target is warm / cold."""
    out = {"all": summarize(metrics_from_ranks(ranks), n_boot=1000)}
    for name, sel in (("warm", ~is_cold), ("cold", is_cold)):
        out[name] = {"cases": int(sel.sum()), **summarize(metrics_from_ranks(ranks[sel]), n_boot=1000)}
    return out


def cold_start(args, split: Split, emb: torch.Tensor, opts: dict) -> dict:
    rng = np.random.default_rng(0)
    n = split.num_items
    cold = np.sort(rng.choice(n, size=int(args.cold_fraction * n), replace=False))
    mask = np.zeros(n, dtype=bool)
    mask[cold] = True
    cs = ColdSplit(split, cold)
    work, cache = Path(args.work) / "cold", {}
    cases = {w: cs.cases(w) for w in ("valid", "test")}
    # popularity a deployed system knows when it scores: occurrences in the histories scored, targets excluded
    counts = {w: history_counts(cases[w][1], n) for w in cases}
    is_cold = {w: mask[cases[w][2]] for w in cases}

    def rows(scores: dict) -> dict:  # scores: split -> (b, N)
        r = {w: groups(target_ranks_of(scores[w], cases[w][1], cases[w][2]), is_cold[w]) for w in cases}
        return {**r["test"], "valid": r["valid"]}

    train_pop = torch.as_tensor(train_counts(cs), dtype=torch.float32)
    cold_pop = {w: torch.where(torch.from_numpy(mask), torch.as_tensor(counts[w], dtype=torch.float32), -1.0)
                for w in cases}
    out = {"cold_items": len(cold), "cold_fraction": args.cold_fraction, "budget_s": args.cold_budget,
           "max_warm_loss": MAX_WARM_LOSS,
           "Popularity": rows({w: train_pop[None].expand(len(cases[w][1]), -1) for w in cases}),
           "Popularity (cold items only)": {**rows({w: cold_pop[w][None].expand(len(cases[w][1]), -1)
                                                    for w in cases}),
                                            "counts": "occurrences in the histories scored (model inputs)"}}
    goal = out["Popularity (cold items only)"]["valid"]["cold"]["recall@10"]["mean"]  # the bar, on validation
    # item co-occurrence over the histories scored; its config chosen on all validation cases
    config, cooc_curve = calibrate_cooccurrence(cases["valid"][1], cases["valid"][2], n)
    cooc = {w: Cooccurrence(cases[w][1], n, config).score_all(cases[w][1]) for w in cases}
    out["Co-occurrence"] = {**rows(cooc), "config": asdict(config), "curve_valid": cooc_curve}
    out["Co-occurrence (cold items only)"] = rows({w: torch.where(torch.from_numpy(mask), cooc[w], -1.0)
                                                   for w in cases})
    for name in MODELS:
        def run(name=name):
            model, info = train_model(name, cs, emb, args.cold_budget, work, cache, opts, cold=cold)
            return {w: model_scores(model, cases[w][1], 32) for w in cases}, info
        scores, info = cached_scores(work / "scores" / name.replace(" ", "_"), args.reuse_scores, run)
        out[name] = {**rows(scores), **info}
        prior, bonused = with_cold_handling(name, scores, out[name], cases, counts, mask, is_cold, rows, work, goal)
        out[f"{name} + prior"], out[f"{name} + prior + cold bonus"] = prior, bonused
        out.update(with_cooccurrence(name, scores, cooc, out[name], cases, counts, mask, is_cold, rows, work, goal))
        for label in (" + prior + cold bonus", " + co-occurrence", " + cold co-occurrence"):
            c = out[name + label]
            print(f"cold {name + label}: test cold-target Recall@10 {out[name]['cold']['recall@10']['mean']:.4f} -> "
                  f"{c['cold']['recall@10']['mean']:.4f}, warm {out[name]['warm']['recall@10']['mean']:.4f} -> "
                  f"{c['warm']['recall@10']['mean']:.4f} (valid cold {c['valid']['cold']['recall@10']['mean']:.4f}, "
                  f"warm {out[name]['valid']['warm']['recall@10']['mean']:.4f} -> "
                  f"{c['valid']['warm']['recall@10']['mean']:.4f})", flush=True)
    plot_curves(out, Path(args.out).with_name("recsys_cold.png"))
    return out


def with_cooccurrence(name: str, scores: dict, cooc: dict, raw: dict, cases: dict, counts: dict, mask: np.ndarray,
                      is_cold: dict, rows, work: Path, goal: float) -> dict:
    """The rows "<name> + co-occurrence" (share chosen on validation warm-target cases among warm items) and "<name> +
    cold co-occurrence" (share 0): the model's scores mixed with the co-occurrence scores, cold items by co-occurrence
    alone, then prior, weights and cold bonus chosen on validation as in `with_cold_handling`."""
    warm = ~is_cold["valid"]
    _, vh, vt = cases["valid"]
    share, share_curve = calibrate_share(scores["valid"][torch.from_numpy(warm)], cooc["valid"][torch.from_numpy(warm)],
                                         [h for h, s in zip(vh, warm) if s], vt[warm], items=~mask)
    out = {}
    for label, sh in ((" + co-occurrence", share), (" + cold co-occurrence", 0.0)):
        mixed = {w: mix_scores(scores[w], cooc[w], sh, mask) for w in cases}
        _, row = with_cold_handling(name + label, mixed, raw, cases, counts, mask, is_cold, rows, work, goal)
        out[name + label] = {**row, "share": sh, "share_curve_warm_ndcg@10": share_curve}
    return out


def with_cold_handling(name: str, scores: dict, raw: dict, cases: dict, counts: dict, mask: np.ndarray,
                       is_cold: dict, rows, work: Path, goal: float) -> tuple[dict, dict]:
    """The rows of `name` with the popularity prior (bonus 0) and with the prior and the cold bonus, all chosen on
    validation; the bonus curve on validation and test. `raw`: the model alone (the reference of the warm bound);
    `goal`: the validation cold-target Recall@10 the bonus aims for (`calibrate_cold_bonus`'s `cold_goal`)."""
    _, vh, vt = cases["valid"]
    warm_c, cold_c = ~is_cold["valid"], is_cold["valid"]

    def pick(seq, sel):
        return [h for h, s in zip(seq, sel) if s]

    weight, warm_curve = calibrate_weight(scores["valid"][torch.from_numpy(warm_c)], counts["valid"],
                                          pick(vh, warm_c), vt[warm_c], items=~mask)
    cold_weight, cold_curve = calibrate_weight(scores["valid"][torch.from_numpy(cold_c)], counts["valid"],
                                               pick(vh, cold_c), vt[cold_c], items=mask)
    reference = raw["valid"]["warm"]["recall@10"]["mean"]  # the same model without cold handling
    bonus, curve, feasible = calibrate_cold_bonus(scores["valid"], counts["valid"], mask, vh, vt, weight,
                                                  cold_weight, reference, MAX_WARM_LOSS, cold_goal=goal)
    _, th, tt = cases["test"]
    _, test_curve, _ = calibrate_cold_bonus(scores["test"], counts["test"], mask, th, tt, weight, cold_weight,
                                            raw["warm"]["recall@10"]["mean"], MAX_WARM_LOSS,
                                            grid=[p["bonus"] for p in curve])  # reported, never used to choose
    cal = BlendCalibration(weight, cold_weight, bonus, chosen_on="validation cases of the cold split",
                           curves={"warm_weight_ndcg@10": warm_curve, "cold_weight_ndcg@10": cold_curve})
    cal.save(work / f"calibration_{name.replace(' ', '_')}.json")  # what a user loads with BlendCalibration.load
    blended = {w: blend_scores(scores[w], counts[w], weight, mask, cold_weight, 0.0) for w in cases}
    bonused = {w: blend_scores(scores[w], counts[w], weight, mask, cold_weight, bonus) for w in cases}
    return ({**rows(blended), "weight": weight, "cold_weight": cold_weight},
            {**rows(bonused), "calibration": asdict(cal), "feasible_on_valid": feasible,
             "reference_valid_warm_recall@10": reference, "cold_goal_valid_recall@10": goal,
             "bonus_curve": {"valid": curve, "test": test_curve}})


def plot_curves(out: dict, path: Path) -> None:
    """Cold-target against warm-target Recall@10 over the cold bonus, per model (solid: prior + cold bonus, dashed:
    + co-occurrence), validation and test."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, which in zip(axes, ("valid", "test")):
        for i, name in enumerate(MODELS):
            color = f"C{i}"
            raw = out[name]["valid"] if which == "valid" else out[name]
            ax.plot(raw["warm"]["recall@10"]["mean"], raw["cold"]["recall@10"]["mean"], marker="x", ms=8, color=color)
            for label, style in ((" + prior + cold bonus", "-"), (" + co-occurrence", "--")):
                row = out[name + label]
                pts = row["bonus_curve"][which]
                ax.plot([p["warm"] for p in pts], [p["cold"] for p in pts], marker=".", linestyle=style, color=color,
                        label=name + label)
                chosen = next(p for p in pts if p["bonus"] == row["calibration"]["cold_bonus"])
                ax.plot(chosen["warm"], chosen["cold"], marker="o", ms=9, mfc="none", color=color)
        for base, style in (("Popularity (cold items only)", "--"), ("Co-occurrence (cold items only)", ":")):
            pop = out[base]["valid"] if which == "valid" else out[base]
            ax.axhline(pop["cold"]["recall@10"]["mean"], color="gray", linestyle=style, label=base)
        ax.set_xlabel(f"{which}: warm-target Recall@10")
        ax.set_ylabel(f"{which}: cold-target Recall@10")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Cold start: the cold bonus curve (x: model alone, o: bonus chosen on validation; dashed: with item "
                 "co-occurrence)")
    fig.tight_layout()
    save_figure(fig, path)
