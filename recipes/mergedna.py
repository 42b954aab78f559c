"""Train a MergeDNA genome tokenizer (learned token merging).

    accelerate launch recipes/mergedna.py                       # CPU preset on pyrodigal's bundled genomes (<= 15 min)
    accelerate launch recipes/mergedna.py --data a.fna.gz b.fa  # your genomes (plain or gzipped FASTA)
    accelerate launch recipes/mergedna.py --preset base --max-steps 100000 --set train.batch_size=64   # GPU
    accelerate launch --multi_gpu --num_processes 2 recipes/mergedna.py

The last 10% of every sequence is held out for evaluation. Rerunning with the same --output-dir resumes.
"""

from __future__ import annotations

from gentok.cli.errors import run
from gentok.cli.recipe_args import apply_overrides, recipe_parser
from gentok.data.dna import default_dna_data, format_bases
from gentok.evaluation.dna import evaluate_mergedna
from gentok.files import atomic_write_json
from gentok.tokenizers.dna.mergedna import PRESETS, MergeDNA
from gentok.training import TrainConfig, fit

TRAIN = TrainConfig(max_steps=500, batch_size=8, lr=2e-3, warmup_steps=30, min_lr_ratio=0.05, weight_decay=1e-2,
                    eval_every=200, checkpoint_every=100, log_every=10, clip_grad=1.0)


def main(argv: list[str] | None = None):
    parser = recipe_parser(__doc__.split("\n\n")[0], PRESETS, "cpu", "outputs/mergedna", data_nargs="+",
                           data_help="FASTA files (plain or gzipped) instead of the bundled genomes")
    args = parser.parse_args(argv)
    model_cfg, train_cfg = apply_overrides(PRESETS[args.preset], TRAIN, args)
    train, held_out, split = default_dna_data(model_cfg.seq_len, args.data, eval_windows=64, seed=train_cfg.seed)
    print(f"data: {len(split.names)} sequence(s), {format_bases(sum(map(len, split.train)))} train, "
          f"{format_bases(sum(map(len, split.held_out)))} held out")
    result = fit(MergeDNA(model_cfg), train, train_cfg, eval_data=held_out,
                 run_config={"model": {"preset": args.preset, "data": args.data or "pyrodigal"}})
    if result.is_main_process:
        report = evaluate_mergedna(result.model, split.held_out, max_bases=20000)
        atomic_write_json(f"{train_cfg.output_dir}/summary.json", report)
        print("held-out region, through encode/decode:")
        for k, v in report.items():
            print(f"  {k:<24} {v:.4f}" if isinstance(v, float) else f"  {k:<24} {v}")
    return result


if __name__ == "__main__":
    run(main, prog="mergedna")
