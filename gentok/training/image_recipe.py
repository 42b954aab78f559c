"""What the image-tokenizer recipes (TiTok, FlexTok, binary latents) share after parsing their command line: build
the held-out split of the image data, build the model, wrap it with the adversarial loss when asked, `fit` it with
the image evaluation, and on the main process evaluate the trained tokenizer and write its report (eval.json,
reconstructions.png, prefixes.png). A recipe is then parse -> `train_image_tokenizer` (recipes/titok.py).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from gentok.data.images import default_image_data
from gentok.evaluation.image import evaluate_image_tokenizer, image_eval_fn, write_report
from gentok.losses.gan import tokenizer_eval, tokenizer_of, with_adversary
from gentok.training.config import TrainConfig
from gentok.training.fit import FitResult, fit


def train_image_tokenizer(model_cfg, build: Callable[[object], nn.Module], train_cfg: TrainConfig, *,
                          data: str | None = None, data_options: dict | None = None, run_config: dict | None = None,
                          adversary_args=None, eval_length: int = 256, eval_options: dict | None = None,
                          make_loss_fn: Callable[[], Callable] | None = None) -> FitResult:
    """Train an image tokenizer on `data` (a folder; None: the bundled photographs) and report on held-out images.

    Args:
        model_cfg: the model's config (its `image_size` sizes the data).
        build: `model_cfg -> tokenizer`, called after the data is built (the order every recipe has always used, so
            a seed gives the same run).
        train_cfg: the loop's `TrainConfig` (its seed also seeds the data).
        data_options: keywords of `default_image_data` (training views: scales, colour jitter, ...).
        run_config: JSON-able run description saved with checkpoints (preset, data flags, ...).
        adversary_args: an object with the `--gan-*` values (`gan_weight`, `gan_start`, ...) or None for no
            adversarial loss (`gentok.losses.gan.with_adversary`).
        eval_length: held-out images in the final evaluation.
        eval_options: keywords of `evaluate_image_tokenizer` (e.g. FlexTok `steps`, `guidance`;
            `perceptual_weights`).
        make_loss_fn: `() -> loss_fn` for `fit`, when not the model's own loss; called after the model is built
            (a loss that loads a network must not move the RNG the initial weights are drawn from).
    Returns:
        `fit`'s result, its `model` the trained tokenizer (never the adversarial wrapper).
    """
    train, held_out = default_image_data(model_cfg.image_size, data, eval_length=eval_length, seed=train_cfg.seed,
                                         **(data_options or {}))
    model = build(model_cfg)
    adversarial = {}
    if adversary_args is not None:
        model, adversarial = with_adversary(model, adversary_args, train_cfg)
    loss_fn = make_loss_fn() if make_loss_fn is not None else None
    result = fit(model, train, train_cfg, eval_data=held_out, eval_fn=tokenizer_eval(image_eval_fn),
                 run_config={**(run_config or {}), **adversarial}, **({"loss_fn": loss_fn} if loss_fn else {}))
    result.model = tokenizer_of(result.model)
    if result.is_main_process:
        report = evaluate_image_tokenizer(result.model, held_out, **(eval_options or {}))
        write_report(report, result.model, held_out, train_cfg.output_dir)
    return result
