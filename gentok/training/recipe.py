"""What every recipe's command line shares: `--preset`, `--data`, `--output-dir`, `--max-steps`, `--seed`, and
`--set section.field=value` overrides of any model or training config field.

`apply_overrides` is also the one step every recipe takes before it builds data and models, so it is where a run is
made reproducible (the global RNGs are seeded, so the initial weights are a function of `--seed`) and where the CPU
thread count is chosen (see `gentok.training.threads`).
"""

from __future__ import annotations

import argparse

from accelerate.utils import set_seed

from gentok.config import parse_override, replace
from gentok.training.config import TrainConfig
from gentok.training.threads import apply_num_threads
from gentok.training.trackers import requested_trackers


def recipe_parser(description: str, presets: dict, default_preset: str, default_output: str,
                  data_help: str = "your own data instead of the bundled default",
                  data_nargs: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--preset", default=default_preset, choices=sorted(presets), help="model size preset")
    p.add_argument("--data", default=None, nargs=data_nargs, help=data_help)
    p.add_argument("--output-dir", default=default_output, help="checkpoints, final model, metrics, pictures")
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides the recipe default)")
    p.add_argument("--seed", type=int, default=None,
                   help="seeds the initial weights, the data order and training randomness (default: train.seed)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a config field, e.g. --set model.width=256 --set train.lr=3e-4 (repeatable)")
    return p


def apply_overrides(model_cfg, train_cfg: TrainConfig, args) -> tuple[object, TrainConfig]:
    """Apply `--set`, `--output-dir`, `--max-steps` and `--seed` to the two configs (validated by their classes),
    then prepare the process: seed every global RNG with the train seed (before the recipe builds its model, so
    two runs of one command start from the same weights and a resumed run matches an uninterrupted one), set the
    CPU threads, and check the requested trackers are installed. Problems exit with a one-line message."""
    model_over, train_over = {}, {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        section, _, field = key.partition(".")
        if not sep or section not in ("model", "train") or not field:
            raise SystemExit(f"--set expects model.FIELD=VALUE or train.FIELD=VALUE, got {item!r}")
        target = model_cfg if section == "model" else train_cfg
        try:
            parsed = parse_override(target, field, value)
        except ValueError as e:
            raise SystemExit(f"--set {item}: {e}") from None
        (model_over if section == "model" else train_over)[field] = parsed
    train_over["output_dir"] = args.output_dir
    if args.max_steps is not None:
        train_over["max_steps"] = args.max_steps
    if args.seed is not None:
        train_over["seed"] = args.seed
    try:
        model_cfg, train_cfg = replace(model_cfg, **model_over), replace(train_cfg, **train_over)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"invalid configuration: {e}") from None
    try:
        requested_trackers(train_cfg.log_with)
        apply_num_threads(train_cfg.num_threads)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    set_seed(train_cfg.seed)
    return model_cfg, train_cfg
