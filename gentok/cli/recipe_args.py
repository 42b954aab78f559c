"""What every recipe's command line shares: `--preset`, `--data`, `--output-dir`, `--max-steps`, `--seed`, `--set
section.field=value` overrides of any model or training config field, `--debug`, and the image recipes' `--gan-*`
flags and the evaluation's `--inception-weights` / `--download-inception`.

`apply_overrides` is also the one step every recipe takes before it builds data and models, so it is where a run is
made reproducible (the global RNGs are seeded, so the initial weights are a function of `--seed`) and where the CPU
thread count is chosen (see `gentok.training.threads`). Bad values raise `UsageError`, which the recipe's
`gentok.cli.errors.run` turns into one line and exit status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from accelerate.utils import set_seed

from gentok.cli.errors import DEBUG_ENV, DEBUG_FLAG, UsageError
from gentok.config import parse_override, replace
from gentok.nn.discriminator import PatchDiscriminatorConfig
from gentok.training.config import TrainConfig
from gentok.training.threads import apply_num_threads
from gentok.training.trackers import requested_trackers


def recipe_parser(description: str, presets: dict, default_preset: str, default_output: str,
                  data_help: str = "your own data instead of the bundled default",
                  data_nargs: str | None = None) -> argparse.ArgumentParser:
    """The parser every recipe starts from; the recipe adds its own flags to it."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--preset", default=default_preset, choices=sorted(presets), help="model size preset")
    p.add_argument("--data", default=None, nargs=data_nargs, help=data_help)
    p.add_argument("--output-dir", default=default_output, help="checkpoints, final model, metrics, pictures")
    p.add_argument("--max-steps", type=int, default=None,
                   help="optimizer steps (overrides the recipe default); an output dir already trained past it is "
                        "refused: raise it to continue, or choose a new --output-dir")
    p.add_argument("--seed", type=int, default=None,
                   help="seeds the initial weights, the data order and training randomness (default: train.seed)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field, e.g. --set model.width=256 --set train.lr=3e-4 (repeatable)")
    # `gentok.cli.errors.run` reads and removes the flag; declared here so --help lists it
    p.add_argument(DEBUG_FLAG, action="store_true",
                   help=f"show the traceback of an error (also: {DEBUG_ENV}=1 in the environment)")
    return p


def apply_overrides(model_cfg, train_cfg: TrainConfig, args) -> tuple[object, TrainConfig]:
    """Apply `--set`, `--output-dir`, `--max-steps` and `--seed` to the two configs (validated by their classes),
    then prepare the process: seed every global RNG with the train seed (before the recipe builds its model, so
    two runs of one command start from the same weights and a resumed run matches an uninterrupted one), set the
    CPU threads, and check the requested trackers are installed. Problems raise a one-line `UsageError`."""
    model_over, train_over = {}, {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        section, _, field = key.partition(".")
        if not sep or section not in ("model", "train") or not field:
            raise UsageError(f"--set expects model.FIELD=VALUE or train.FIELD=VALUE, got {item!r}")
        target = model_cfg if section == "model" else train_cfg
        try:
            parsed = parse_override(target, field, value)
        except ValueError as e:
            raise UsageError(f"--set {item}: {e}") from None
        (model_over if section == "model" else train_over)[field] = parsed
    train_over["output_dir"] = args.output_dir
    if args.max_steps is not None:
        train_over["max_steps"] = args.max_steps
    if args.seed is not None:
        train_over["seed"] = args.seed
    try:
        model_cfg, train_cfg = replace(model_cfg, **model_over), replace(train_cfg, **train_over)
    except (TypeError, ValueError) as e:
        raise UsageError(f"invalid configuration: {e}") from None
    try:
        requested_trackers(train_cfg.log_with)
        apply_num_threads(train_cfg.num_threads)
    except ValueError as e:
        raise UsageError(str(e)) from None
    set_seed(train_cfg.seed)
    return model_cfg, train_cfg


def add_adversarial_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The image recipes' `--gan-*` flags (read by `gentok.losses.gan.with_adversary`); the adversarial loss is off
    unless `--gan-weight` is above 0."""
    parser.add_argument("--gan-weight", type=float, default=0.0,
                        help="adversarial loss weight x adaptive weight (0 = off; 0.1 as TiTok/MaskGIT)")
    parser.add_argument("--gan-start", type=int, default=None, metavar="STEPS",
                        help="optimizer steps of reconstruction-only training first (default: half of max-steps)")
    parser.add_argument("--gan-channels", type=int, default=PatchDiscriminatorConfig.channels,
                        help="discriminator width (first layer)")
    parser.add_argument("--gan-layers", type=int, default=PatchDiscriminatorConfig.layers,
                        help="discriminator stride-2 layers")
    return parser


def add_inception_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`--inception-weights FILE` / `--download-inception`: with either, the recipe's evaluation adds the field's
    distribution metrics (rFID or gFID, Inception Score, precision/recall); without, they are skipped and nothing is
    downloaded. Read them with `inception_options`."""
    parser.add_argument("--inception-weights", default=None, metavar="FILE",
                        help="the Inception network's weights (pt_inception-2015-12-05-6726825d.pth, torch-fidelity's "
                             "file): adds rFID/gFID, Inception Score and precision/recall to the evaluation")
    parser.add_argument("--download-inception", action="store_true",
                        help="download those weights (torch-fidelity's URL) instead; never done without this flag")
    return parser


def inception_options(args) -> dict:
    """The `--inception-*` flags as keywords of `gentok.evaluation.fid.inception_features` (and of
    `evaluate_image_tokenizer`); a weights file that does not exist is a `UsageError` now, not after training."""
    if args.inception_weights is not None and not Path(args.inception_weights).is_file():
        raise UsageError(f"--inception-weights {args.inception_weights}: no such file (torch-fidelity's "
                         "pt_inception-2015-12-05-6726825d.pth, or --download-inception)")
    return {"inception_weights": args.inception_weights, "download_inception": args.download_inception}
