"""The RecGPT recipe's own run against the SASRec it trained: what a user gets from `accelerate launch
recipes/recgpt.py`, read from its output directory.

The recipe trains a SASRec on the SASRec recipe's schedule (its OUTPUT/sasrec) for the collaborative codes, then RecGPT,
and serves RecGPT on SASRec. This reads OUTPUT/metrics.json (the pooled model and RecGPT alone, validation and test
with CIs) and evaluates OUTPUT/sasrec the same way, so the three are compared on one split at the recipe budget.

    accelerate launch recipes/recgpt.py --output-dir outputs/recgpt
    python -m benchmarks.recsys.recipe_run --output-dir outputs/recgpt    # -> benchmarks/results/recsys_recipe.json
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import parser, write_json
from recsys.data import load_split
from recsys.evaluation import evaluate
from recsys.models.sasrec import SASRec


def main(argv=None) -> dict:
    p = parser(__doc__, "recsys_recipe.json")
    p.add_argument("--output-dir", default="outputs/recgpt", help="the RecGPT recipe's --output-dir")
    p.add_argument("--wall-s", type=float, default=None, help="the recipe's wall time, if measured, to record")
    args = p.parse_args(argv)
    out = Path(args.output_dir)
    metrics = json.loads((out / "metrics.json").read_text())
    if "recgpt_alone" not in metrics:
        raise SystemExit(f"{out} holds no RecGPT on SASRec run (trained with --no-pool-sasrec?)")
    _, split = load_split(None, seed=0)
    sasrec = SASRec.from_pretrained(out / "sasrec" / "model").eval()
    rows = {"RecGPT on SASRec": {w: metrics[w] for w in ("valid", "test")},
            "RecGPT alone": metrics["recgpt_alone"],
            "SASRec (recipe)": {w: evaluate(sasrec, split, w)["summary"] for w in ("valid", "test")}}
    sas = rows["SASRec (recipe)"]
    ratios = {m: {w: r[w]["ndcg@10"]["mean"] / sas[w]["ndcg@10"]["mean"] for w in ("valid", "test")}
              for m, r in rows.items()}
    result = {"benchmark": "recsys_recipe", "recipe": "recipes/recgpt.py (defaults)", "output_dir": str(out),
              "gen_weight": metrics["gen_weight"]["weight"], "rows": rows, "ndcg@10_vs_sasrec": ratios,
              "wall_s": args.wall_s}
    write_json(args.out, result)
    for m, r in rows.items():
        print(f"{m:24s} NDCG@10 valid {r['valid']['ndcg@10']['mean']:.4f}  test {r['test']['ndcg@10']['mean']:.4f} "
              f"[{r['test']['ndcg@10']['ci_low']:.3f}, {r['test']['ndcg@10']['ci_high']:.3f}]  "
              f"x{ratios[m]['test']:.3f} of SASRec on test (valid x{ratios[m]['valid']:.3f})")
    print(f"-> {args.out}")
    return result


if __name__ == "__main__":
    main()
