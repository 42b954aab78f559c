"""Train a 1D binary-latent image tokenizer (Instella-T2I style: each token is a vector of B bits).

    accelerate launch recipes/binary.py                      # tiny preset on the bundled photographs (CPU, <= 15 min)
    accelerate launch recipes/binary.py --preset tiny-lfq    # the LFQ sign quantizer instead of Bernoulli bits
    accelerate launch recipes/binary.py --data DIR --preset B-128x32 --max-steps 100000 --output-dir runs/binary
    accelerate launch recipes/binary.py --gan-weight 0.1                 # + PatchGAN adversarial loss (2nd half)

Writes OUTPUT_DIR/model, eval.json (held-out PSNR/SSIM beside the equal-bit baseline, per-bit utilisation) and
reconstructions.png (originals / reconstructions / baseline). Rerunning with the same --output-dir resumes.
"""

from __future__ import annotations

from gentok.cli.data_args import RECIPE_COLOR_JITTER, RECIPE_SCALES, add_data_arguments, data_options, describe_data
from gentok.cli.errors import run
from gentok.cli.recipe_args import (add_adversarial_arguments, add_inception_arguments, apply_overrides,
                                    inception_options, recipe_parser)
from gentok.tokenizers.image.binary import PRESETS, BinaryTokenizer
from gentok.training import TrainConfig
from gentok.training.image_recipe import train_image_tokenizer

# The CPU default: 7.6 minutes wall on 2 idle cores (TiTok tiny's architecture). The tiny preset anneals the Bernoulli
# temperature to 0 over its first 350 micro-batches: the second half sees hard bits. Training views, white-balance
# jitter and EMA weights as the TiTok recipe chose them on its validation photographs (same architecture): validation
# 17.55 dB against 17.14 for uniform scales without jitter or EMA (README).
TRAIN = TrainConfig(max_steps=700, batch_size=32, lr=2e-3, warmup_steps=40, min_lr_ratio=0.05, weight_decay=1e-4,
                    ema_decay=0.999, eval_every=200, checkpoint_every=100, log_every=10, clip_grad=1.0)


def main(argv: list[str] | None = None):
    parser = recipe_parser(__doc__.split("\n\n")[0], PRESETS, "tiny", "outputs/binary")
    add_data_arguments(parser, default=RECIPE_SCALES, color_jitter=RECIPE_COLOR_JITTER)
    add_adversarial_arguments(parser)
    add_inception_arguments(parser)
    args = parser.parse_args(argv)
    inception = inception_options(args)
    model_cfg, train_cfg = apply_overrides(PRESETS[args.preset], TRAIN, args)
    # the report adds per-bit utilisation (the model has `to_bits`) and its summary prints that, not the share of the
    # 2**B packed patterns hit
    return train_image_tokenizer(
        model_cfg, BinaryTokenizer, train_cfg, data=args.data, data_options=data_options(args),
        run_config={"model": {"preset": args.preset}, "data": describe_data(args)}, adversary_args=args,
        eval_options=inception)


if __name__ == "__main__":
    run(main, prog="binary")
