"""Train a FlexTok variable-length image tokenizer (rectified-flow decoder, nested dropout).

    accelerate launch recipes/flextok.py                     # tiny preset on the bundled photographs (CPU, <= 15 min)
    accelerate launch recipes/flextok.py --data DIR --preset d12-d12 --max-steps 200000 --output-dir runs/flextok
    accelerate launch --multi_gpu --num_processes 2 recipes/flextok.py   # same thing, two processes

Data: the bundled photographs (or --data DIR) as the TiTok recipe samples them: native crops, large regions and whole
photographs drawn 45% / 45% / 10% (--scales), each with a random white-balance shift (--color-jitter 0.1), held out by
source; see gentok/data/images.py.

Writes OUTPUT_DIR/model (gentok.load-able), eval.json (held-out PSNR/SSIM per number of kept tokens beside the
equal-bit baseline), prefixes.png (held-out images decoded from 1, 2, 4, ..., K tokens) and reconstructions.png
(originals / all K tokens / baseline). Rerunning with the same --output-dir resumes from the newest complete
checkpoint.
"""

from __future__ import annotations

from gentok.cli.data_args import RECIPE_COLOR_JITTER, RECIPE_SCALES, add_data_arguments, data_options, describe_data
from gentok.cli.errors import run
from gentok.cli.recipe_args import add_inception_arguments, apply_overrides, inception_options, recipe_parser
from gentok.tokenizers.image.flextok import PRESETS, FlexTok
from gentok.training import TrainConfig
from gentok.training.image_recipe import train_image_tokenizer

# The CPU default: <= 15 minutes on 2 cores (~0.7 s per step of 32 views idle). GPU presets set --max-steps / --set.
# Training views, white-balance jitter and EMA weights as the TiTok recipe chose them (RECIPE_SCALES,
# RECIPE_COLOR_JITTER, decay 0.999): on the validation photographs 15.08 dB at k = 32 (16 flow steps) against 14.56
# with uniform scales, no jitter and no EMA (1-thread runs of 1000 steps, side by side).
TRAIN = TrainConfig(max_steps=1000, batch_size=32, lr=1.5e-3, warmup_steps=40, min_lr_ratio=0.05, weight_decay=1e-4,
                    ema_decay=0.999, eval_every=0, checkpoint_every=100, log_every=10, clip_grad=1.0)


def main(argv: list[str] | None = None):
    parser = recipe_parser(__doc__.split("\n\n")[0], PRESETS, "tiny", "outputs/flextok")
    # no --gan-*: the flow decoder's training estimate carries no pixel gradient
    add_data_arguments(parser, default=RECIPE_SCALES, color_jitter=RECIPE_COLOR_JITTER)
    parser.add_argument("--eval-images", type=int, default=64, help="held-out images (whole photographs and crops) for the final evaluation")
    parser.add_argument("--steps", type=int, default=None, help="flow steps for evaluation (default: the preset's)")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance for evaluation")
    add_inception_arguments(parser)
    args = parser.parse_args(argv)
    inception = inception_options(args)
    model_cfg, train_cfg = apply_overrides(PRESETS[args.preset], TRAIN, args)
    return train_image_tokenizer(
        model_cfg, FlexTok, train_cfg, data=args.data, data_options=data_options(args),
        run_config={"model": {"preset": args.preset}, "data": describe_data(args)}, eval_length=args.eval_images,
        eval_options={"steps": args.steps, "guidance": args.guidance, **inception})


if __name__ == "__main__":
    run(main, prog="flextok")
