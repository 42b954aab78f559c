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
* learning curves (`--only curves`): one long run per model of `CURVE_MODELS` (SASRec, SETRec on SASRec, RecGPT
  with collaborative codes) with validation NDCG@10 of all validation users at `--curve-points` points (test recorded
  beside it, never selected on), to `--curve-budget` CPU seconds or until `--patience` passes bring no improvement;
  the plateaus, the time each model first reaches SASRec's plateau, quality at equal time both ways, and exact test
  metrics (CIs) of each run's best-on-validation weights; `recsys.png` becomes the curve plot. Models run as separate
  processes in order: a run saved in `--work`/curves/<model> is loaded, not retrained;
* cold start: 20% of the catalog (seeded, uniform) is removed from every training sequence; every model is retrained
  at `--cold-budget` and its test metrics are split by whether the target is a warm or a cold item, against
  popularity over all items and a popularity baseline that ranks the cold items only; and each model with a popularity
  prior and a cold bonus chosen on validation (`recsys.blend`; the bonus curve also in `recsys_cold.png`);
* zero-shot: the catalog is split into two disjoint halves (seeded permutation); RecGPT and SETRec are trained on the
  interactions with items of half A and evaluated on half B's interactions with B's items added from their text
  (`recsys.catalog.with_catalog`, what `recsys evaluate --catalog` does), against popularity on B and a SASRec
  trained on B at the same budget; and each model blended with B's popularity, the weight chosen on A's validation;
* scoring throughput / latency per user / peak memory (not rerun with `--skip-throughput`, which keeps those keys of
  the existing JSON): RecGPT's catalog-constrained beam search, SETRec's one-pass generation + inner-product top-K,
  and a faiss brute-force top-K over item embeddings, same histories, on the demo catalog and on a synthetic
  1,000,000-item catalog.

    python -m benchmarks.recsys --skip-throughput      # quality parts; writes benchmarks/results/recsys.{json,png}
    python -m benchmarks.recsys --only cold --skip-throughput   # redo one part (others kept in the JSON)
    python -m benchmarks.recsys --only equal --budgets 80 --skip-throughput --work outputs/b80   # one budget; parts
        # and budgets can run as parallel processes (separate --work): each merges its rows into the one JSON
    python -m benchmarks.recsys --only curves --skip-throughput --curve-points 8   # the learning curves
    python -m benchmarks.recsys                         # everything, timings included (on a quiet machine): the
        # demo-catalog throughput uses the largest budget's models
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import tempfile
from pathlib import Path

import torch

from benchmarks.common import parser, write_json
from benchmarks.recsys.budget import EVAL_USERS, RUN
from benchmarks.recsys.cold import cold_start
from benchmarks.recsys.equal import (
    CURVE_MODELS,
    cooccurrence_row,
    equal_compute,
    plot,
    plot_curves,
    print_equal,
    run_curves,
    summarize_curves,
)
from benchmarks.recsys.models import MODELS
from benchmarks.recsys.throughput import throughput_demo, throughput_large
from benchmarks.recsys.zero_shot import zero_shot
from recsys.data import load_split
from recsys.evaluation import evaluate
from recsys.models.popularity import Popularity
from recsys.text import item_embeddings


def merge(old: dict, new: dict) -> dict:
    """The existing JSON updated with this run's parts; equal-compute rows of other budgets are kept, so budgets can
    run as separate processes (`--only equal --budgets 100`). The old `quality` key is superseded by equal_compute."""
    result = {k: v for k, v in {**old, **new}.items() if k not in ("quality", "machine")}  # machine: this run's
    if "equal_compute" in new and "equal_compute" in old:
        o, n = old["equal_compute"], new["equal_compute"]
        eq = {**o, **n}
        for name in MODELS:
            eq[name] = {**o.get(name, {}), **n.get(name, {})}
        eq["budgets_s"] = sorted({*o.get("budgets_s", []), *n.get("budgets_s", [])})
        eq["curves"] = {**o.get("curves", {}), **n.get("curves", {})}  # curve models run as separate processes
        result["equal_compute"] = {k: v for k, v in eq.items() if v or k not in ("curves", "budgets_s")}
    return result


def main(argv=None):
    p = parser(__doc__, out="recsys.json")
    p.prog = "python -m benchmarks.recsys"
    p.add_argument("--budgets", type=float, nargs="+", default=[25.0, 50.0, 100.0],
                   help="training CPU-second budgets of the equal-compute comparison")
    p.add_argument("--cold-budget", type=float, default=50.0)
    p.add_argument("--zero-budget", type=float, default=50.0)
    p.add_argument("--cold-fraction", type=float, default=0.2)
    p.add_argument("--cf-weight", type=float, default=1.0, help="CF weight of RecGPT's collaborative item codes")
    p.add_argument("--id-embedding", action="store_true", help="RecGPT adds a learned item-id embedding")
    p.add_argument("--curve-models", nargs="+", choices=CURVE_MODELS, default=list(CURVE_MODELS),
                   help="models of the learning curves (`--only curves`)")
    p.add_argument("--curve-budget", type=float, nargs=3, default=[600.0, 300.0, 600.0],
                   metavar=("SASREC", "SETREC", "RECGPT"),
                   help="CPU seconds of each curve model's own run (SASRec, SETRec on SASRec, RecGPT)")
    p.add_argument("--curve-points", type=int, default=12, help="validation passes per curve")
    p.add_argument("--patience", type=int, default=4,
                   help="stop a curve after this many validation passes without improvement (0: never)")
    p.add_argument("--only", choices=("equal", "curves", "cold", "zero", "throughput"), action="append", default=None,
                   help="run only these parts (repeatable); the JSON keeps the others")
    p.add_argument("--skip-throughput", action="store_true",
                   help="do not time scoring; the throughput keys of the existing --out JSON are kept")
    p.add_argument("--large-items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=256)
    p.add_argument("--work", default="outputs/bench_recsys")
    p.add_argument("--reuse-scores", action="store_true",
                   help="cold/zero: reuse the model scores an earlier run saved in --work (recalibrate, no training)")
    p.add_argument("--eval-users", type=int, default=EVAL_USERS, help="validation users per selection pass")
    args = p.parse_args(argv)
    RUN["eval_users"] = args.eval_users
    torch.set_num_threads(1)
    torch.manual_seed(0)
    args.curve_budget = dict(zip(CURVE_MODELS, [*args.curve_budget, args.curve_budget[-1]]))  # both RecGPT curves
    parts = set(args.only or ("equal", "curves", "cold", "zero", "throughput"))
    if args.skip_throughput:
        parts.discard("throughput")
    opts = {"cf_weight": args.cf_weight, "id_embedding": args.id_embedding}
    data, split = load_split(None, seed=0)
    emb = item_embeddings(data, progress=False)
    result: dict = {"threads": torch.get_num_threads(), "budget_clock": "time.process_time, one thread",
                    "valid_users_per_selection": args.eval_users}
    models = {}
    if "equal" in parts:
        result["equal_compute"], models = equal_compute(args, split, emb, opts)
        print_equal(result["equal_compute"])
    if "curves" in parts:
        curves = run_curves(args, split, emb, args.curve_models)
        pop = Popularity.from_split(split)
        curves["Popularity"] = {w: evaluate(pop, split, w, n_boot=1)["summary"]["ndcg@10"]["mean"]
                                for w in ("valid", "test")}
        curves["Co-occurrence"] = cooccurrence_row(split)  # model-free item-kNN baseline
        result.setdefault("equal_compute", {})["curves"] = curves
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
        if "curves" in result.get("equal_compute", {}):
            result["equal_compute"]["curve_summary"] = summarize_curves(result["equal_compute"]["curves"])
            write_json(out, result)
            plot_curves(result["equal_compute"]["curves"], out.with_suffix(".png"))
        elif "equal_compute" in result:
            plot(result, out.with_suffix(".png"))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
