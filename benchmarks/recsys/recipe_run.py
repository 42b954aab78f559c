"""The RecGPT recipe's own run against the SASRec it trained: what a user gets from `accelerate launch
recipes/recgpt.py`, read from its output directory.

The recipe trains a SASRec on the SASRec recipe's schedule (its OUTPUT/sasrec) for the collaborative codes, then RecGPT,
and serves RecGPT on SASRec with a co-occurrence expert (`recsys.models.with_cooccurrence`). This evaluates every part
of that served model on one split at the recipe budget, with per-user ranks so each ratio to SASRec gets a paired
bootstrap CI: the served model, RecGPT on SASRec without the expert, RecGPT alone, co-occurrence alone, the recipe's
SASRec, and **SASRec with the same expert** (fitted here the same way, on validation): the comparison on equal terms,
which says what the generative model adds beyond the expert.

    accelerate launch recipes/recgpt.py --output-dir outputs/recgpt
    python -m benchmarks.recsys.recipe_run --output-dir outputs/recgpt    # -> benchmarks/results/recsys_recipe.json
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from benchmarks.common import parser, write_json
from recsys.data import load_split
from recsys.evaluation import evaluate
from recsys.metrics import paired_ratio_ci
from recsys.models.recgpt_sasrec import RecGPTSASRec
from recsys.models.sasrec import SASRec
from recsys.models.with_cooccurrence import WithCooccurrence, fit_cooccurrence

SERVED = "RecGPT on SASRec + co-occurrence"
REFERENCES = ("SASRec (recipe)", "SASRec + co-occurrence")


def models(out: Path, split) -> tuple[dict, dict]:
    """The models to compare, by row name, and how the expert was fitted around the SASRec."""
    served = WithCooccurrence.from_pretrained(out / "model")
    if not isinstance(served.model, RecGPTSASRec):
        raise SystemExit(f"{out}/model is not RecGPT on SASRec with co-occurrence (trained with --no-pool-sasrec?)")
    pool = served.model
    alone = copy.deepcopy(pool)
    alone.gen_weight.fill_(1.0)  # RecGPT's exact log-probabilities alone
    cooc = copy.deepcopy(served)
    cooc.set_share(1.0)
    sasrec = SASRec.from_pretrained(out / "sasrec" / "model").eval()
    sasrec_cooc, fitted = fit_cooccurrence(copy.deepcopy(sasrec), split)
    return ({SERVED: served, "RecGPT on SASRec": pool, "RecGPT alone": alone, "Co-occurrence": cooc,
             "SASRec (recipe)": sasrec, "SASRec + co-occurrence": sasrec_cooc},
            {k: fitted[k] for k in ("share", "cooccurrence", "share_curve_valid")})


def main(argv=None) -> dict:
    p = parser(__doc__, "recsys_recipe.json")
    p.add_argument("--output-dir", default="outputs/recgpt", help="the RecGPT recipe's --output-dir")
    p.add_argument("--wall-s", type=float, default=None, help="the recipe's wall time, if measured, to record")
    args = p.parse_args(argv)
    out = Path(args.output_dir)
    metrics = json.loads((out / "metrics.json").read_text())
    _, split = load_split(None, seed=0)
    compared, sasrec_fit = models(out, split)
    evals = {name: {w: evaluate(m.eval(), split, w) for w in ("valid", "test")} for name, m in compared.items()}
    rows = {name: {w: e["summary"] for w, e in ev.items()} for name, ev in evals.items()}
    ratios = {ref: {name: {w: paired_ratio_ci(ev[w]["per_user"]["ndcg@10"], evals[ref][w]["per_user"]["ndcg@10"])
                           for w in ev} for name, ev in evals.items()} for ref in REFERENCES}
    result = {"benchmark": "recsys_recipe", "recipe": "recipes/recgpt.py (defaults)", "output_dir": str(out),
              "gen_weight": metrics["gen_weight"]["weight"], "served": SERVED,
              "cooccurrence": {k: metrics["cooccurrence"][k] for k in ("share", "cooccurrence")},
              "sasrec_cooccurrence": sasrec_fit, "rows": rows, "ndcg@10_vs": ratios, "wall_s": args.wall_s}
    write_json(args.out, result)
    for m, r in rows.items():
        a, b = ratios[REFERENCES[0]][m]["test"], ratios[REFERENCES[1]][m]["test"]
        print(f"{m:34s} NDCG@10 valid {r['valid']['ndcg@10']['mean']:.4f}  test {r['test']['ndcg@10']['mean']:.4f} "
              f"[{r['test']['ndcg@10']['ci_low']:.3f}, {r['test']['ndcg@10']['ci_high']:.3f}]  test x{a['ratio']:.3f} "
              f"[{a['ci_low']:.2f}, {a['ci_high']:.2f}] of SASRec, x{b['ratio']:.3f} [{b['ci_low']:.2f}, "
              f"{b['ci_high']:.2f}] of SASRec + co-occurrence")
    print(f"-> {args.out}")
    return result


if __name__ == "__main__":
    main()
