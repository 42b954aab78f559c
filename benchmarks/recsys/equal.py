"""Equal compute: every model trained to the same budgets of training CPU-seconds, test metrics with CIs, against
popularity; the table and the plot of quality against budget."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import pyplot, save_figure
from benchmarks.recsys.models import MODELS, test_row, train_model
from recsys.data import Split
from recsys.metrics import format_table
from recsys.models.popularity import Popularity


def equal_compute(args, split: Split, emb: torch.Tensor, opts: dict) -> tuple[dict, dict]:
    work, cache = Path(args.work) / "equal", {}
    rows: dict = {"Popularity": test_row(Popularity.from_split(split), split, {"total_cpu_s": 0.0})}
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


# -- learning curves: one long run per model, quality by training CPU-seconds ---------------------------------------
CURVE_MODELS = ("SASRec", "SETRec on SASRec", "RecGPT (collaborative codes)", "RecGPT (RQ-VAE codes)")


def plateau(curve: list[dict], tol: float = 0.02) -> dict:
    """The curve's best validation point and where it levels off: the first point within `tol` (relative) of it."""
    best = max(curve, key=lambda p: p["valid_ndcg@10"])
    first = next(p for p in curve if p["valid_ndcg@10"] >= (1 - tol) * best["valid_ndcg@10"])
    return {"valid_ndcg@10": best["valid_ndcg@10"], "test_ndcg@10": best["test_ndcg@10"],
            "total_cpu_s": best["total_cpu_s"], "levels_off_at_total_cpu_s": first["total_cpu_s"]}


def time_to(curve: list[dict], level: float) -> float | None:
    """Total CPU seconds of the first curve point whose validation NDCG@10 reaches `level` (None: never)."""
    return next((p["total_cpu_s"] for p in curve if p["valid_ndcg@10"] >= level), None)


def at_time(curve: list[dict], seconds: float) -> dict | None:
    """The last curve point at or before `seconds` total CPU seconds (what the model had reached by then)."""
    before = [p for p in curve if p["total_cpu_s"] <= seconds]
    return before[-1] if before else None


def summarize_curves(rows: dict) -> dict:
    """Per curve model: its plateau, the time it first reaches SASRec's plateau (validation), its point at SASRec's
    plateau time and SASRec's point at its plateau time (quality at equal CPU time, both ways; None: no point yet)."""
    sas = plateau(rows["SASRec"]["curve"])
    out = {}
    for name in CURVE_MODELS:
        if name not in rows:
            continue
        c = rows[name]["curve"]
        own = plateau(c)
        out[name] = {"plateau": own, "time_to_sasrec_plateau_s": time_to(c, sas["valid_ndcg@10"]),
                     "at_sasrec_plateau_time": at_time(c, sas["total_cpu_s"]),
                     "sasrec_at_plateau_time": at_time(rows["SASRec"]["curve"], own["total_cpu_s"])}
    return out


def plot_curves(rows: dict, path: Path) -> None:
    """Validation and test NDCG@10 against total training CPU seconds, with SASRec's validation plateau, the models
    with the co-occurrence expert (stars at their model's CPU time) and co-occurrence alone."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, which in zip(axes, ("valid", "test")):
        for name in CURVE_MODELS:
            if name in rows:
                c = rows[name]["curve"]
                ax.plot([p["total_cpu_s"] for p in c], [p[f"{which}_ndcg@10"] for p in c], marker="o", ms=3,
                        label=name)
        ax.axhline(plateau(rows["SASRec"]["curve"])[f"{which}_ndcg@10"], color="C0", linestyle=":",
                   label="SASRec plateau (best validation point)")
        ax.axhline(rows["Popularity"][which], color="gray", linestyle="--", label="Popularity")
        for i, name in enumerate(n for n in rows if n.endswith(" + co-occurrence")):  # no curve: the final point
            r, base = rows[name], rows[name.removesuffix(" + co-occurrence")]
            ax.plot(base["total_cpu_s"], r["valid_ndcg@10"] if which == "valid" else r["test"]["ndcg@10"]["mean"],
                    marker="*", ms=11, linestyle="none", color=f"C{i + 4}", label=name)
        if "Co-occurrence" in rows:
            cooc = rows["Co-occurrence"]
            ax.axhline(cooc["valid"] if which == "valid" else cooc["test_summary"]["ndcg@10"]["mean"], color="black",
                       linestyle="-.", label="Co-occurrence alone (no training)")
        ax.set_xlabel("total training CPU seconds (one thread; a model's SASRec included)")
        ax.set_ylabel(f"{which} NDCG@10 (served top-10, all users)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("MovieLens latest-small: learning curves (one run per model, LR decaying to its budget)")
    fig.tight_layout()
    save_figure(fig, path)


def run_curves(args, split: Split, emb: torch.Tensor, names) -> dict:
    """Learning curves of `names` (of `CURVE_MODELS`, SASRec first when a later one needs it). A model whose run is
    already in `--work`/curves/<name> (model + run.json, written by an earlier invocation) is loaded, not retrained,
    so the models can run as separate processes in order. Each row: the run (curve included) and the exact test
    metrics with bootstrap CIs of its best-on-validation weights."""
    import json

    from benchmarks.recsys.models import CURVE_CLASSES, curve_model
    from gentok.files import atomic_write_json

    work, cache, rows, served = Path(args.work) / "curves", {}, {}, {}
    need = list(names)
    if any(n != "SASRec" for n in need) and "SASRec" not in need:
        need.insert(0, "SASRec")
    for name in need:
        d = work / name.replace(" ", "_").replace("(", "").replace(")", "")
        if (d / "run.json").is_file():
            model, run = CURVE_CLASSES[name].from_pretrained(d / "model"), json.loads((d / "run.json").read_text())
            model.eval()
        else:
            t = time.time()
            model, run = curve_model(name, split, emb, args.curve_budget[name], work, cache, args.curve_points,
                                     args.patience)
            run["wall_s"] = round(time.time() - t)
            model.save_pretrained(d / "model")
            atomic_write_json(d / "run.json", run)
        if name == "SASRec":
            cache["SASRec"] = (model, run)
        if name in names:
            rows[name] = test_row(model, split, run)
            p = plateau(run["curve"])
            print(f"{name}: plateau valid {p['valid_ndcg@10']:.4f} at {p['total_cpu_s']:.0f} CPU s; test NDCG@10 "
                  f"{rows[name]['test']['ndcg@10']['mean']:.4f}", flush=True)
        if name in names:
            served[name] = model
        if name.startswith("RecGPT") and name in names:
            rows[f"{name} on SASRec"], served[f"{name} on SASRec"] = pooled_row(name, model, cache["SASRec"][0],
                                                                               split, run)
    rows.update(expert_rows({n: m for n, m in served.items() if n == "SASRec" or n.endswith(" on SASRec")}, split))
    return rows


def expert_rows(models: dict, split: Split) -> dict:
    """Each of `models` (by row name) with the item co-occurrence expert beside it
    (`recsys.models.with_cooccurrence`): the co-occurrence config chosen once on validation, each share on validation;
    test metrics with CIs, and paired-bootstrap ratios of test NDCG@10 to the model alone and to SASRec with the
    expert (the comparison on equal terms). Rows "<name> + co-occurrence"."""
    from recsys.evaluation import evaluate
    from recsys.metrics import paired_ratio_ci
    from recsys.models.cooccurrence import calibrate_cooccurrence
    from recsys.models.with_cooccurrence import fit_cooccurrence

    if not models:
        return {}
    _, vh, vt = split.cases("valid")
    c, _ = calibrate_cooccurrence(vh, vt, split.num_items)
    point = {"windows": (c.window,), "decays": (c.decay,), "alphas": (c.alpha,)}
    rows, per_user = {}, {}
    for name, model in models.items():
        wrapped, fitted = fit_cooccurrence(model, split, search=point)
        ev, alone = (evaluate(m, split, "test", batch_size=32) for m in (wrapped, model))
        per_user[name] = ev["per_user"]["ndcg@10"]
        rows[f"{name} + co-occurrence"] = {
            "test": ev["summary"], "share": fitted["share"], "cooccurrence": fitted["cooccurrence"],
            "valid_ndcg@10": dict(fitted["share_curve_valid"])[fitted["share"]],
            "test_ndcg@10_vs_model_alone": paired_ratio_ci(per_user[name], alone["per_user"]["ndcg@10"])}
        print(f"{name} + co-occurrence: share {fitted['share']}, test NDCG@10 {ev['summary']['ndcg@10']['mean']:.4f}",
              flush=True)
    if "SASRec" in per_user:
        for name in per_user:
            rows[f"{name} + co-occurrence"]["test_ndcg@10_vs_sasrec_cooccurrence"] = paired_ratio_ci(
                per_user[name], per_user["SASRec"])
    return rows


def pooled_row(name: str, recgpt, sasrec, split: Split, run: dict) -> tuple[dict, object]:
    """RecGPT on SASRec (`recsys.models.recgpt_sasrec`) from a curve's RecGPT and the SASRec curve's model: the
    generative weight fitted on validation NLL, test metrics with CIs, and the test NDCG@10 of every weight of the
    grid (reported, never used to choose). Its CPU time is the RecGPT run's (its SASRec included). Returns (the row,
    the pooled model)."""
    from recsys.models.recgpt_sasrec import GEN_WEIGHTS, RecGPTSASRec, choose_gen_weight, select_gen_weight
    from recsys.train import warm_items

    model = RecGPTSASRec.on(recgpt, sasrec, has_cf=warm_items(split)).eval()
    chosen = choose_gen_weight(model, split)
    row = test_row(model, split, {"gen_weight": chosen["weight"], "valid_nll": chosen["nll"],
                                  "valid_ndcg@10_by_weight": chosen["ndcg@10"],
                                  "valid_ndcg@10": chosen["ndcg@10"][chosen["weight"]],
                                  "total_cpu_s": run["total_cpu_s"],
                                  "recgpt_steps": run["steps_done"]})
    _, th, tt = split.cases("test")
    row["test_ndcg@10_by_weight"] = select_gen_weight(model, th, tt, GEN_WEIGHTS)["ndcg@10"]  # reported, not used
    model.gen_weight.fill_(chosen["weight"])
    print(f"{name} on SASRec: weight {chosen['weight']} (validation NLL), test NDCG@10 "
          f"{row['test']['ndcg@10']['mean']:.4f}", flush=True)
    return row, model


def cooccurrence_row(split: Split) -> dict:
    """The model-free item co-occurrence baseline (`recsys.models.cooccurrence`) on the curve split: its config chosen
    on the validation cases (built from their histories), then each case scored from the histories of its own kind
    (what a deployed system knows when it scores); validation NDCG@10 and test metrics with CIs."""
    from recsys.evaluation import evaluate
    from recsys.models.cooccurrence import Cooccurrence, calibrate_cooccurrence

    _, vh, vt = split.cases("valid")
    config, _ = calibrate_cooccurrence(vh, vt, split.num_items)

    def summary(which: str, n_boot: int) -> dict:  # each case scored from the histories of its own kind
        model = Cooccurrence(split.cases(which)[1], split.num_items, config)
        return evaluate(model, split, which, n_boot=n_boot)["summary"]

    return {"valid": summary("valid", 1)["ndcg@10"]["mean"], "test_summary": summary("test", 1000),
            "config": {"window": config.window, "decay": config.decay, "alpha": config.alpha},
            "built_from": "the histories of the cases scored (validation histories for validation, test for test)"}

