"""The command-line flags the recommender recipes share beyond gentok's recipe parser: the `--data` help, and the
text model flags of RecGPT and SETRec (`--text-encoder`, and the SASRec that supplies collaborative signal)."""

from __future__ import annotations

import argparse

from recsys.train import SASREC_CF_TRAIN


def data_help(needs_text: bool) -> str:
    """The `--data` help of a recommender recipe."""
    need = ("and item text (text columns in the interactions, or an items file)" if needs_text
            else "(item text is not used)")
    return (f"interactions with user_id, item_id[, timestamp] {need}: a CSV/TSV/Parquet file, a directory with "
            f"interactions.* [+ items.*], or RecBole .inter [+ .item] files (default: the MovieLens demo data)")


def add_text_model_args(parser: argparse.ArgumentParser, sasrec_use: str) -> None:
    """`--text-encoder`, `--sasrec DIR` and `--sasrec-steps` (RecGPT and SETRec); `sasrec_use` says what the SASRec's
    item embeddings are for."""
    parser.add_argument("--text-encoder", default=None, help="local transformers model dir (default all-MiniLM-L6-v2)")
    parser.add_argument("--sasrec", default=None,
                        help=f"trained SASRec model dir for {sasrec_use} (default: train one first)")
    parser.add_argument("--sasrec-steps", type=int, default=SASREC_CF_TRAIN.max_steps,
                        help="training steps of that SASRec when it is trained first")


def add_cooccurrence_arg(parser: argparse.ArgumentParser, default: bool) -> None:
    """`--cooccurrence` / `--no-cooccurrence`: serve the trained model with an item co-occurrence expert beside it
    (`recsys.models.with_cooccurrence`, its config and share chosen on validation) or alone."""
    parser.add_argument("--cooccurrence", action=argparse.BooleanOptionalAction, default=default,
                        help="serve the model mixed with item co-occurrence (item-kNN over the training sequences; "
                        f"config and share chosen on validation); default {'on' if default else 'off'}")
