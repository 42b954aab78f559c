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
