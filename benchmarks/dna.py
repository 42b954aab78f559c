"""MergeDNA against fixed k-mers and Hugging Face BPE on a held-out genome region.

    python -m benchmarks.dna --model outputs/mergedna/model      # a recipe-trained model
    python -m benchmarks.dna --preset tiny --steps 300            # train a small one here first (minutes)
    python -m benchmarks.dna --speed-only [--preset cpu]          # encode speed only (random weights: speed does
                                                                  # not depend on them), no training

Measures, on the held-out tail of pyrodigal's bundled genomes (never trained on):
  * compression vs accuracy: bases per token, bits per base and base accuracy after encode -> decode, for MergeDNA at
    several tokens-per-window settings (one model: it was trained with a sampled merge rate), for non-overlapping
    k-mers and for BPE trained with `tokenizers` on the same training genomes (both lossless);
  * masked-base accuracy (15% of bases in 4-base spans) against a same-width transformer over single bases trained
    for the same steps on the same windows;
  * encoding throughput in bases/s, as a ratio to the BPE tokenizer (vocabulary 4096) on the same held-out bases in
    the same process: both timed round-robin (`interleaved`) after a warm-up, each through its public batch call
    (`MergeDNA.encode(texts)`, `Tokenizer.encode_batch(pieces)`); the thread counts of both are recorded.
Writes benchmarks/results/dna.json and prints a table.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from gentok.losses.dna import base_cross_entropy, base_targets
from torch import nn

import gentok
from benchmarks.common import RESULTS, interleaved, parser, print_table, write_json
from gentok.data.dna import default_dna_data
from gentok.evaluation.dna import masked_accuracy, reconstruction_accuracy, span_mask
from gentok.nn import Transformer, init_weights, sincos_positions
from gentok.tokenizers.dna.fasta import MASK, NUM_CLASSES, NUM_INPUT_SYMBOLS, N, codes_to_text
from gentok.tokenizers.dna.mergedna import PRESETS, MergeDNA
from gentok.training import TrainConfig, fit


class BaseMLM(nn.Module):
    """The single-base peer: embedding + transformer over every base + linear head (full attention)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, seq_len: int):
        super().__init__()
        self.embed = nn.Embedding(NUM_INPUT_SYMBOLS, dim)
        self.register_buffer("positions", sincos_positions(seq_len, dim), persistent=False)
        self.body = Transformer(dim, depth, heads, mlp_ratio)
        self.head = nn.Linear(dim, NUM_CLASSES)
        init_weights(self)

    def forward(self, bases):
        return self.head(self.body(self.embed(bases) + self.positions[: bases.shape[1]]))


def mlm_loss(model, batch):
    """Span-masked language modelling for the peer (the same masking the evaluation uses)."""
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
    mask = torch.stack([span_mask(batch.shape[1], 0.15, 4, g) for _ in range(len(batch))])
    logits = model(torch.where(mask & (batch != N), torch.full_like(batch, MASK), batch))
    loss, acc = base_cross_entropy(logits, base_targets(batch), where=mask)
    return loss, {"mask_acc": acc}


def kmer_rows(held: list[np.ndarray], ks=(1, 3, 6, 8)) -> list[dict]:
    n = sum(len(r) for r in held)
    return [{"method": f"{k}-mer", "bases_per_token": n / sum(math.ceil(len(r) / k) for r in held),
             "vocab_size": 4**k, "bits_per_base": 2.0 * k * sum(math.ceil(len(r) / k) for r in held) / n,
             "base_accuracy": 1.0} for k in ks]


def train_bpe(train: list[np.ndarray], vocab_size: int, piece: int = 1000):
    from tokenizers import Tokenizer, models, trainers

    tok = Tokenizer(models.BPE())
    texts = [codes_to_text(r[s:s + piece]) for r in train for s in range(0, len(r), piece)]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=list("ACGTN"), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def bpe_rows(train, held, vocabs, piece: int = 1000) -> tuple[list[dict], dict]:
    """Compression rows for BPE at each vocabulary size, and the trained tokenizers by vocabulary size."""
    rows, tokenizers = [], {}
    texts = bpe_pieces(held, piece)
    n = sum(len(t) for t in texts)
    for v in vocabs:
        tok = train_bpe(train, v, piece)
        enc = tok.encode_batch(texts)
        count = sum(len(e.ids) for e in enc)
        assert "".join("".join(e.tokens) for e in enc) == "".join(texts)  # lossless, checked
        rows.append({"method": f"BPE {v}", "bases_per_token": n / count, "vocab_size": tok.get_vocab_size(),
                     "bits_per_base": math.log2(tok.get_vocab_size()) * count / n, "base_accuracy": 1.0})
        tokenizers[v] = tok
    return rows, tokenizers


def bpe_pieces(held, piece: int = 1000) -> list[str]:
    """Held-out regions as the 1000-base pieces BPE is trained and run on."""
    return [codes_to_text(r[s:s + piece]) for r in held for s in range(0, len(r), piece)]


def encode_speed(model, bpe, held, tokens_per_window: int, repeats: int) -> dict:
    """Bases/s of MergeDNA encode and BPE encode_batch on the same held-out bases, interleaved, and their ratio."""
    texts, pieces = [codes_to_text(r) for r in held], bpe_pieces(held)
    n = sum(len(t) for t in texts)
    assert n == sum(len(p) for p in pieces)
    sec = interleaved({"mergedna": lambda: model.encode(texts, tokens_per_window=tokens_per_window),
                       "bpe": lambda: bpe.encode_batch(pieces)}, repeats=repeats)
    return {"bases": n, "mergedna_encode_bases_per_s": n / sec["mergedna"], "bpe_encode_bases_per_s": n / sec["bpe"],
            "ratio_mergedna_over_bpe": sec["bpe"] / sec["mergedna"], "torch_threads": torch.get_num_threads(),
            "bpe_threads": os.environ.get("RAYON_NUM_THREADS", "all cores (RAYON_NUM_THREADS unset)"),
            "tokens_per_window": tokens_per_window, "repeats": repeats}


def main(argv=None):
    p = parser(__doc__, out="dna.json")
    p.add_argument("--model", default=None, help="a trained MergeDNA directory (else one is trained here)")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--steps", type=int, default=600, help="training steps for MergeDNA (if no --model) and the peer")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-bases", type=int, default=20000, help="held-out bases per sequence to score")
    p.add_argument("--work-dir", default="outputs/bench_dna")
    p.add_argument("--speed-only", action="store_true", help="only the encode speed, on a random-weight --preset model")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds of the encode speed comparison")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    if args.speed_only:
        return speed_only(args)

    if args.model:
        model = gentok.load(args.model)
    else:
        cfg = TrainConfig(max_steps=args.steps, batch_size=args.batch_size, lr=2e-3, warmup_steps=30,
                          min_lr_ratio=0.05, weight_decay=1e-2, eval_every=0, checkpoint_every=0,
                          output_dir=f"{args.work_dir}/mergedna")
        model = None
    seq_len = (model.config if model else PRESETS[args.preset]).seq_len
    train, held_windows, split = default_dna_data(seq_len)
    held = [r[: args.eval_bases] for r in split.held_out]
    if model is None:
        model = fit(MergeDNA(PRESETS[args.preset]), train, cfg).model
    model.eval()
    c = model.config

    # compression vs accuracy
    rows = []
    settings = {c.train_tokens[0], c.tokens_per_window, c.train_tokens[1], (c.train_tokens[0] + c.tokens_per_window) // 2}
    for t in sorted(settings):
        r = reconstruction_accuracy(model, held, args.eval_bases, tokens_per_window=t)
        rows.append({"method": f"MergeDNA t={t}/{c.window}", **{k: r[k] for k in ("bases_per_token", "vocab_size",
                                                                                    "bits_per_base", "base_accuracy")}})
    rows += kmer_rows(held)
    bpe, bpe_tokenizers = bpe_rows(split.train, held, (256, 4096, model.vocab_size))
    rows += bpe
    speed = encode_speed(model, bpe_tokenizers[4096], held, c.tokens_per_window, args.repeats)

    # masked-base prediction against a same-width single-base transformer
    depth = c.local_depth + c.latent_depth + c.latent_dec_depth + c.local_dec_depth
    peer = BaseMLM(c.dim, depth, c.heads, c.mlp_ratio, c.seq_len)
    peer_steps = args.steps
    peer_cfg = TrainConfig(max_steps=peer_steps, batch_size=args.batch_size, lr=2e-3, warmup_steps=30,
                           min_lr_ratio=0.05, weight_decay=1e-2, eval_every=0, checkpoint_every=0,
                           output_dir=f"{args.work_dir}/peer")
    peer = fit(peer, train, peer_cfg, loss_fn=mlm_loss).model.eval()
    windows = torch.stack([held_windows[i] for i in range(len(held_windows))])
    masked = {"mergedna": masked_accuracy(model.predict, windows),
              "single_base_transformer": masked_accuracy(peer, windows),
              "params_mergedna": sum(p.numel() for p in model.parameters()),
              "params_single_base": sum(p.numel() for p in peer.parameters()),
              "peer_steps": peer_steps, "windows": len(windows), "window_bases": c.seq_len}
    result = {"held_out": {"names": split.names, "bases_scored": sum(len(h) for h in held)},
              "model": {"preset": args.preset if not args.model else args.model, "steps": args.steps if not args.model
                        else "from --model", "tokens_per_window": c.tokens_per_window, "window": c.window},
              "compression": rows, "masked_bases": masked, "speed": speed}
    write_json(args.out, result)

    print_table(rows, ["method", "bases_per_token", "vocab_size", "bits_per_base", "base_accuracy"])
    print(f"masked-base accuracy: MergeDNA {masked['mergedna']:.3f} vs single-base transformer "
          f"{masked['single_base_transformer']:.3f} ({masked['windows']} held-out windows)")
    print_speed(speed)
    print(f"-> {args.out}")
    return result


def print_speed(speed: dict) -> None:
    print(f"encode: MergeDNA {speed['mergedna_encode_bases_per_s']:,.0f} bases/s, BPE "
          f"{speed['bpe_encode_bases_per_s']:,.0f} bases/s (ratio {speed['ratio_mergedna_over_bpe']:.4f}; torch "
          f"threads {speed['torch_threads']}, BPE threads {speed['bpe_threads']})")


def speed_only(args) -> dict:
    """Encode speed of a random-weight model of `--preset` (or `--model`) against BPE 4096; writes `speed` only."""
    model = gentok.load(args.model) if args.model else MergeDNA(PRESETS[args.preset])
    model.eval()
    _, _, split = default_dna_data(model.config.seq_len)
    held = [r[: args.eval_bases] for r in split.held_out]
    bpe = train_bpe(split.train, 4096)
    speed = encode_speed(model, bpe, held, model.config.tokens_per_window, args.repeats)
    result = {"model": {"preset": args.model or args.preset, "weights": "from --model" if args.model else "random"},
              "speed": speed}
    out = RESULTS / "dna_speed.json" if args.out == str(RESULTS / "dna.json") else args.out  # keep the full run's file
    write_json(out, result)
    print_speed(speed)
    print(f"-> {out}")
    return result


if __name__ == "__main__":
    main()
