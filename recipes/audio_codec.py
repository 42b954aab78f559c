"""Train a neural audio codec (SEANet conv encoder/decoder + residual VQ with quantizer dropout).

    accelerate launch recipes/audio_codec.py                 # tiny preset on CPU: espeak-ng speech if installed,
                                                             # otherwise generated signals (<= 15 min on 2 cores)
    accelerate launch recipes/audio_codec.py --data DIR --preset 24khz --output-dir runs/codec24
    accelerate launch --multi_gpu --num_processes 2 recipes/audio_codec.py   # same thing, two processes

Writes the model to OUTPUT/model, held-out originals and reconstructions to OUTPUT/samples/*.wav, a spectrogram
comparison to OUTPUT/spectrograms.png and the rate-distortion table to OUTPUT/summary.json.
Rerunning with the same --output-dir resumes from the newest complete checkpoint.
"""

from __future__ import annotations

from gentok.cli.errors import UsageError, run
from gentok.cli.recipe_args import apply_overrides, recipe_parser
from gentok.data.audio import default_audio_data
from gentok.evaluation.audio import audio_eval_fn, write_report
from gentok.tokenizers.audio.codec import PRESETS, AudioCodec
from gentok.training import TrainConfig, fit

# The CPU default: batches of 8 half-second crops. GPU presets: raise --max-steps and train.batch_size.
TRAIN = TrainConfig(max_steps=1000, batch_size=8, lr=2e-3, warmup_steps=40, min_lr_ratio=0.05, weight_decay=1e-4,
                    betas=(0.8, 0.99), eval_every=500, checkpoint_every=200, log_every=20, clip_grad=1.0)


def main(argv: list[str] | None = None):
    parser = recipe_parser(__doc__.split("\n\n")[0], PRESETS, "tiny", "outputs/audio_codec")
    parser.add_argument("--segment-seconds", type=float, default=0.5, help="length of the training crops")
    args = parser.parse_args(argv)
    model_cfg, train_cfg = apply_overrides(PRESETS[args.preset], TRAIN, args)
    segment = int(args.segment_seconds * model_cfg.sample_rate) // model_cfg.hop * model_cfg.hop
    if segment < max(model_cfg.mel_windows):
        raise UsageError(f"--segment-seconds too short: need at least {max(model_cfg.mel_windows)} samples")
    train, held_out, source = default_audio_data(model_cfg.sample_rate, args.data, segment=segment,
                                                 seed=train_cfg.seed)
    print(f"data: {source}; {len(train)} training crops of {segment} samples, {len(held_out)} held-out crops")
    model = AudioCodec(model_cfg)
    result = fit(model, train, train_cfg, eval_data=held_out, eval_fn=audio_eval_fn,
                 run_config={"model": {"preset": args.preset}, "data": source})
    if result.is_main_process:
        write_report(result.model, held_out, train_cfg.output_dir,
                     extra={"data": source, "preset": args.preset, "steps": result.step, "seconds": result.seconds})
    return result


if __name__ == "__main__":
    run(main, prog="audio_codec")
