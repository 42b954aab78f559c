"""`recsys` command line.

    recsys score --model DIR --input histories.csv --out recs.parquet --k 10
    accelerate launch --multi_gpu --num_processes 2 -m recsys.cli score ...     # sharded, merged by rank 0
    recsys score --engine ray|spark --model DIR --input h.csv --out recs/       # on Ray Data / Spark: Parquet dir
    recsys evaluate --model DIR [--data PATH] [--split test]                    # full-ranking metrics with CIs
    recsys evaluate --model DIR --data OTHER --catalog                          # zero-shot on OTHER's catalog
    recsys score --model DIR --input h.csv --out recs.parquet --catalog items.csv   # recommend from another catalog

Data is matched to the model's items by identity (id *and* text, `recsys.catalog`): ids that the model uses for
other items stop with an error. `--catalog` makes a text-based model (RecGPT, SETRec) rank another catalog's items
instead, adding those it never saw from their text, without retraining. Input files name their columns as the
training data does (`user_id` or `userId`, `item_id` or `movie_id`, ...: `recsys.data.find_column`).

A user mistake ends with one line and exit status 2 (`recsys.cli.errors`; `--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys

from recsys.cli.errors import add_debug_flag, call

DATA_CATALOG = ":data"  # `evaluate --catalog` without a value: the catalog of --data
TEXT_ENCODER_HELP = "with --catalog: local text encoder for new items (default: the one the model was trained with)"


def _score(args) -> int:
    if args.engine != "local" and (args.catalog or args.text_encoder):
        raise ValueError(f"--catalog and --text-encoder are not supported with --engine {args.engine} yet: score "
                         f"with --engine local (optionally under accelerate launch)")
    if args.engine != "local":
        from recsys.engines import score_on_engine

        score_on_engine(args.model, args.input, args.out, engine=args.engine, k=args.k,
                        exclude_seen=not args.include_seen, partitions=args.partitions, chunk_rows=args.chunk_rows,
                        batch_users=args.batch_users, concurrency=args.concurrency,
                        gpus_per_worker=args.gpus_per_worker, progress=not args.quiet)
        return 0
    from recsys.scoring import score_file

    score_file(args.model, args.input, args.out, k=args.k, exclude_seen=not args.include_seen,
               partitions=args.partitions, chunk_rows=args.chunk_rows, batch_users=args.batch_users,
               progress=not args.quiet, catalog=args.catalog, text_encoder=args.text_encoder)
    return 0


def _evaluate(args) -> int:
    from gentok.files import atomic_write_json
    from recsys.catalog import remap_to_catalog
    from recsys.data import leave_one_out, load_data
    from recsys.evaluation import evaluate
    from recsys.metrics import format_table
    from recsys.saving import open_recommender

    source = args.data or "the demo data"
    data = load_data(args.data)
    catalog = data if args.catalog == DATA_CATALOG else args.catalog
    model, cat = open_recommender(args.model, catalog, args.text_encoder, progress=True)
    data, unknown = remap_to_catalog(data, cat, source)
    split = leave_one_out(data, seed=args.seed)
    result = evaluate(model, split, args.split, exclude_seen=not args.include_seen, progress=True)
    out = {"split": split.summary(), "which": args.split, "metrics": result["summary"],
           "interactions_with_unknown_items": unknown, "catalog": "model" if args.catalog is None else
           ("data" if args.catalog == DATA_CATALOG else str(args.catalog)), "catalog_items": len(cat.ids)}
    print(format_table({f"{args.split}": result["summary"]}))
    print(f"split: {split.summary()}; catalog: {len(cat.ids)} items; interactions with items not in the catalog "
          f"(dropped): {unknown}")
    if args.out:
        atomic_write_json(args.out, out)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recsys", description=__doc__.split("\n\n")[0])
    add_debug_flag(p)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score", help="top-K recommendations for a file of user histories")
    s.add_argument("--model", required=True, help="model directory written by a recsys recipe")
    s.add_argument("--input", required=True, help="CSV/Parquet/JSONL with user_id, item_id[, timestamp]")
    s.add_argument("--out", required=True, help="output .parquet or .csv (a directory of Parquet files with --engine)")
    s.add_argument("--k", type=int, default=10, help="recommendations per user")
    s.add_argument("--include-seen", action="store_true", help="allow items already in the history")
    s.add_argument("--partitions", type=int, default=None, help="hash partitions (default: one per 32 MB)")
    s.add_argument("--chunk-rows", type=int, default=100_000, help="input rows read at a time (memory bound)")
    s.add_argument("--batch-users", type=int, default=256, help="users per model call")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--engine", default="local", choices=["local", "ray", "spark"],
                   help="where to score: this process (default), Ray Data or Spark (recsys/engines.py)")
    s.add_argument("--concurrency", type=int, default=None, help="Ray actors (default: one per CPU)")
    s.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per Ray actor")
    s.add_argument("--catalog", default=None, metavar="ITEMS",
                   help="recommend from this catalog (an items file: item id + text columns); the input's item ids "
                        "are its ids, and items the model does not know are added from their text (RecGPT, SETRec)")
    s.add_argument("--text-encoder", default=None, help=TEXT_ENCODER_HELP)
    add_debug_flag(s)
    e = sub.add_parser("evaluate", help="leave-one-out full-ranking metrics on a dataset")
    e.add_argument("--model", required=True, help="model directory written by a recsys recipe")
    e.add_argument("--data", default=None, help="dataset (default: the demo MovieLens data)")
    e.add_argument("--split", default="test", choices=["valid", "test"], help="which held-out interaction to rank")
    e.add_argument("--seed", type=int, default=0, help="tie-breaking seed of the split (use the recipe's)")
    e.add_argument("--include-seen", action="store_true", help="allow items already in the history")
    e.add_argument("--catalog", nargs="?", const=DATA_CATALOG, default=None, metavar="ITEMS",
                   help="rank this catalog's items instead of the model's (text-based models add the items they "
                        "do not know from their text): an items file (item id + text columns) or, given alone, "
                        "the catalog of --data")
    e.add_argument("--text-encoder", default=None, help=TEXT_ENCODER_HELP)
    e.add_argument("--out", default=None, help="write the metrics JSON here")
    add_debug_flag(e)
    return p


def main(argv: list[str] | None = None) -> int:
    """`recsys` with `argv` (default `sys.argv[1:]`); returns the exit status (2 for a user mistake)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    command = _score if args.cmd == "score" else _evaluate
    return call(lambda _: command(args), argv, prog=f"recsys {args.cmd}")


if __name__ == "__main__":  # `spark-submit .../recsys/cli/__init__.py score ...`
    sys.exit(main())
