"""Train a TiTok 1D image tokenizer.

    accelerate launch recipes/titok.py                      # tiny preset on the bundled photographs (CPU, ~8 min)
    accelerate launch recipes/titok.py --data DIR --preset B-64 --output-dir runs/b64
    accelerate launch --multi_gpu --num_processes 2 recipes/titok.py   # same thing, two processes
    accelerate launch recipes/titok.py --init-from yucornetto/tokenizer_titok_l32_imagenet --data DIR  # fine-tune
    accelerate launch recipes/titok.py --gan-weight 0.1 --gan-start 400     # + PatchGAN adversarial loss

Data: the bundled photographs (or --data DIR) as native crops, large regions and whole photographs, drawn 45% / 45% /
10% (--scales native:0.45,region:0.45,whole:0.1), each with a random white-balance shift (--color-jitter 0.1), held
out by source; see gentok/data/images.py. Half the views have their hues turned by a random angle (--hue 0.5), which
the tiny preset's colour tokens turn into colour that generalises (see TITOK_HUE).

Rerunning with the same --output-dir resumes from the newest complete checkpoint.
"""

from __future__ import annotations

from functools import partial

import gentok
from gentok.cli.data_args import RECIPE_COLOR_JITTER, RECIPE_SCALES, add_data_arguments, data_options, describe_data
from gentok.cli.errors import UsageError, run
from gentok.cli.recipe_args import (add_adversarial_arguments, add_inception_arguments, apply_overrides,
                                    inception_options, recipe_parser)
from gentok.config import replace
from gentok.tokenizers.image.titok import PRESETS, TiTok
from gentok.training import TrainConfig
from gentok.training.image_recipe import train_image_tokenizer

# The CPU default, chosen on the held-out scikit-image photographs (validation; the matplotlib source is the test):
# batch 16, not 32 (1650 steps of 16 reached 18.56 dB; 1600 steps of 32, 1.8x the time, 18.57; 3300 of 8, 18.42), and
# training views drawn 45% native, 45% region, 10% whole (a third whole views repeats 17 photographs over and over:
# 18.78 against 18.56 dB uniform): RECIPE_SCALES.
# 1650 steps: 7.9 minutes wall for the whole command on this idle 2-core CPU (titok_multiscale.json).
# GPU presets get their own schedule through --max-steps / --set.
TRAIN = TrainConfig(max_steps=1650, batch_size=16, lr=2e-3, warmup_steps=40, min_lr_ratio=0.05, weight_decay=1e-4,
                    ema_decay=0.999, eval_every=400, checkpoint_every=100, log_every=10, clip_grad=1.0)
# A random white-balance shift of every training view (log-gain per channel, sd 0.1): without it the model learns the
# training photographs' colour balance (the never-seen source's native crops came back with blue 0.05 too low on
# average). Validation: 18.99 dB at sd 0.1, 18.87 at 0.15, 18.20 at 0.3, 18.78 without; random channel permutation
# of half the views 18.71: RECIPE_COLOR_JITTER.
# Then, with scikit-learn's two photographs added to the training data (validation 19.05): evaluating and saving an
# EMA of the weights (decay 0.999, as TiTok's own training does) 19.13 (chosen); the coarse head
# (--set model.coarse_head=true) 19.21 alone but 19.04 with EMA, and 18.90 in a 2-thread run of the exact command,
# a tie (it smooths the 16-px blocks, with colour speckles instead); quarter turns of half the views (--rotate 0.5)
# 19.05, with both 18.81.
# Colour that generalises (hue-rotated validation views, gentok.evaluation.colour): the tiny preset spends 16 of its
# 32 tokens on a colour-blind 4 x 4 thumbnail (model.colour_tokens) and the recipe turns the hue of half the training
# views (--hue 0.5: TITOK_HUE). 600-step runs on the scikit-image validation views, PSNR at the worst rotation (0, 60,
# ..., 300 degrees) against the equal-bit baseline: 4 colour tokens 16.56 vs 17.96 dB, 9: 16.98 vs 17.96, 16: 17.28
# vs 17.96 (18.36 vs 17.81 unrotated); with --hue 0.5: 4: 17.62 vs 17.96, 9: 17.82 vs 17.81, 16: 18.02 vs 17.81
# (chosen; 18.14 vs 17.81 unrotated, hue error 9-10 degrees), 25: 17.82 vs 17.81; 16 with the decoder not reading
# the cells (--set model.colour_condition=false) 17.26 vs 17.81. Without colour tokens, fully
# trained: 15.05 vs 17.81 (hue error up to 71 degrees), and --hue 0.5 alone 15.17 vs 17.81. The chosen default, fully
# trained (titok_multiscale.json): 18.39-18.65 dB at every rotation against 17.81-17.96, hue error 8-9 degrees.
TITOK_HUE = 0.5
# CPU presets sized to their time budget on 2 idle cores (the README quotes the measured runs); --max-steps overrides.
# small: 3000 steps, 52.0 minutes wall for the whole command (titok_small_multiscale.json)
PRESET_TRAIN = {"small": replace(TRAIN, max_steps=3000)}


def main(argv: list[str] | None = None):
    parser = recipe_parser(__doc__.split("\n\n")[0], PRESETS, "tiny", "outputs/titok")
    add_data_arguments(parser, default=RECIPE_SCALES, color_jitter=RECIPE_COLOR_JITTER, hue=TITOK_HUE)
    add_adversarial_arguments(parser)
    parser.add_argument("--perceptual-weights", default=None,
                        help="local transformers vision model dir: adds a feature loss and rFD (never downloaded)")
    parser.add_argument("--perceptual-weight", type=float, default=0.1)
    parser.add_argument("--init-from", default=None, metavar="MODEL",
                        help="fine-tune this TiTok (a gentok model directory, an official TiTok snapshot directory or "
                             "hub id); its architecture replaces --preset")
    add_inception_arguments(parser)
    args = parser.parse_args(argv)
    inception = inception_options(args)
    init = _load_init(args.init_from) if args.init_from else None
    model_cfg, train_cfg = apply_overrides(init.config if init else PRESETS[args.preset],
                                           PRESET_TRAIN.get(args.preset, TRAIN), args)
    make_loss_fn = None
    if args.perceptual_weights:
        from gentok.losses.reconstruction import perceptual_loss_fn

        make_loss_fn = partial(perceptual_loss_fn, args.perceptual_weights, args.perceptual_weight)
    return train_image_tokenizer(
        model_cfg, lambda cfg: _build(cfg, init, args.init_from), train_cfg, data=args.data,
        data_options=data_options(args), run_config={"model": {"preset": args.preset}, "data": describe_data(args)},
        adversary_args=args, eval_options={"perceptual_weights": args.perceptual_weights, **inception},
        make_loss_fn=make_loss_fn)


def _build(cfg, init: TiTok | None, source: str | None) -> TiTok:
    model = TiTok(cfg)
    if init is not None:
        try:
            model.load_state_dict(init.state_dict())
        except RuntimeError:
            raise UsageError(f"--init-from {source}: --set changed the architecture, its weights no longer fit") \
                from None
    return model


def _load_init(source: str) -> TiTok:
    try:
        model = gentok.load(source)
    except ValueError as e:
        raise UsageError(f"--init-from {source}: {e}") from None
    if not isinstance(model, TiTok):
        raise UsageError(f"--init-from {source}: a {type(model).__name__}, not a TiTok")
    if model.vocab_size is None:
        raise UsageError(f"--init-from {source}: a VAE TiTok (continuous tokens); this recipe evaluates against an "
                         "equal-bit baseline, which continuous tokens do not have: fine-tune a VQ TiTok here, or train "
                         "the VAE with gentok.training.fit and TiTok's own loss")
    return model


if __name__ == "__main__":
    run(main, prog="titok")
