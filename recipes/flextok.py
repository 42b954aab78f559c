"""Train a FlexTok variable-length image tokenizer (rectified-flow decoder, nested dropout).

    accelerate launch recipes/flextok.py                     # tiny preset on the bundled photographs (CPU, <= 15 min)
    accelerate launch recipes/flextok.py --data DIR --preset d12-d12 --max-steps 200000 --output-dir runs/flextok
    accelerate launch --multi_gpu --num_processes 2 recipes/flextok.py   # same thing, two processes

Writes OUTPUT_DIR/model (gentok.load-able), eval.json (held-out PSNR/SSIM per number of kept tokens beside the
equal-bit baseline), prefixes.png (held-out images decoded from 1, 2, 4, ..., K tokens) and reconstructions.png
(originals / all K tokens / baseline). Rerunning with the same --output-dir resumes from the newest complete
checkpoint.
"""

from __future__ import annotations

import sys

from gentok.data.images import add_data_arguments, data_options, default_image_data, describe_data
from gentok.tokenizers.image.evaluate import evaluate_image_tokenizer, image_eval_fn, write_report
from gentok.tokenizers.image.flextok import PRESETS, FlexTok
from gentok.training import TrainConfig, fit
from gentok.training.recipe import apply_overrides, recipe_parser

# The CPU default: <= 15 minutes on 2 cores (~0.7 s per step of 32 crops idle). GPU presets set --max-steps / --set.
TRAIN = TrainConfig(max_steps=1000, batch_size=32, lr=1.5e-3, warmup_steps=40, min_lr_ratio=0.05, weight_decay=1e-4,
                    ema_decay=0.0, eval_every=0, checkpoint_every=100, log_every=10, clip_grad=1.0)


def main(argv: list[str] | None = None):
    parser = recipe_parser(__doc__.split("\n\n")[0], PRESETS, "tiny", "outputs/flextok")
    add_data_arguments(parser)  # no --gan-*: the flow decoder's training estimate carries no pixel gradient
    parser.add_argument("--eval-images", type=int, default=64, help="held-out images (whole photographs and crops) for the final evaluation")
    parser.add_argument("--steps", type=int, default=None, help="flow steps for evaluation (default: the preset's)")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance for evaluation")
    args = parser.parse_args(argv)
    model_cfg, train_cfg = apply_overrides(PRESETS[args.preset], TRAIN, args)
    train, held_out = default_image_data(model_cfg.image_size, args.data, eval_length=args.eval_images,
                                         seed=train_cfg.seed, **data_options(args))
    result = fit(FlexTok(model_cfg), train, train_cfg, eval_data=held_out, eval_fn=image_eval_fn,
                 run_config={"model": {"preset": args.preset}, "data": describe_data(args)})
    if result.is_main_process:
        report = evaluate_image_tokenizer(result.model, held_out, steps=args.steps, guidance=args.guidance)
        write_report(report, result.model, held_out, train_cfg.output_dir)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
