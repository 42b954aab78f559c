"""TiTok speed per preset and held-out quality of a trained model beside the equal-bit baseline.

    python -m benchmarks.titok --model outputs/titok/model [--presets tiny,small,S-128,B-64,L-32]

Speed: encode and decode images/s of each preset at its own size (random weights: speed does not depend on them),
with the share of this machine's measured float32 matmul throughput that the model's FLOPs reach.
Quality (for --model, e.g. the output of `accelerate launch recipes/titok.py`): PSNR/SSIM on held-out crops of
photographs the model never trained on, the area-downsample/bilinear-upsample baseline at the same bits per image,
and codebook usage. Writes benchmarks/results/titok.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import gentok
from benchmarks.common import matmul_gflops, parser, print_table, timed, write_json
from gentok.data.images import default_image_data
from gentok.tokenizers.image.evaluate import evaluate_image_tokenizer
from gentok.tokenizers.image.titok import PRESETS, TiTok

BATCH = {"tiny": 32, "tiny-fsq": 32, "small": 32, "S-128": 4, "B-64": 2, "L-32": 1}


def flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def speed(name: str, repeats: int, gflops: float) -> dict:
    torch.manual_seed(0)
    cfg = PRESETS[name]
    model = TiTok(cfg).eval()
    b = BATCH.get(name, 2)
    x = torch.rand(b, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        tokens = model.encode(x)
        enc_s = timed(lambda: model.encode(x), repeats=repeats)
        dec_s = timed(lambda: model.decode(tokens), repeats=repeats)
        enc_f = flops(lambda: model.encode(x))
        dec_f = flops(lambda: model.decode(tokens))
    return {
        "preset": name, "image_size": cfg.image_size, "tokens": cfg.num_tokens,
        "bits_per_image": model.bits_per_token * model.tokens_per_item, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "batch": b, "encode_images_per_s": b / enc_s, "decode_images_per_s": b / dec_s,
        "encode_matmul_share": enc_f / enc_s / 1e9 / gflops, "decode_matmul_share": dec_f / dec_s / 1e9 / gflops,
    }


def main(argv=None):
    p = parser(__doc__, out="titok.json")
    p.add_argument("--model", default="outputs/titok/model", help="trained tokenizer to evaluate ('' to skip)")
    p.add_argument("--presets", default="tiny,small,S-128,B-64,L-32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--eval-crops", type=int, default=256)
    p.add_argument("--merge", action="store_true",
                   help="keep the speed rows of presets not re-measured now from the existing --out file")
    args = p.parse_args(argv)
    gflops = matmul_gflops()
    from tqdm import tqdm

    names = [n for n in args.presets.split(",") if n]
    rows = [{**speed(n, args.repeats, gflops), "matmul_gflops_then": gflops} for n in tqdm(names, desc="presets")]
    old = Path(args.out)
    if args.merge and old.is_file():
        prev = json.loads(old.read_text())
        kept = [{"matmul_gflops_then": prev.get("matmul_gflops"), **r} for r in prev.get("speed", [])
                if r["preset"] not in names]
        rows = kept + rows
    print(f"matmul throughput: {gflops:.1f} GFLOP/s")
    print_table(rows, ["preset", "image_size", "tokens", "bits_per_image", "params_m", "encode_images_per_s",
                       "decode_images_per_s", "encode_matmul_share", "decode_matmul_share"])
    payload = {"matmul_gflops": gflops, "speed": rows}
    if args.model:
        if not Path(args.model).is_dir():
            raise SystemExit(f"{args.model} not found: train it with `accelerate launch recipes/titok.py` or pass --model")
        tok = gentok.load(args.model)
        _, held = default_image_data(tok.config.image_size, eval_length=args.eval_crops)
        report = evaluate_image_tokenizer(tok, held)
        report.pop("_tensors")
        payload["quality"] = {"model": str(args.model), **report}
        print(f"held-out {report['images']} crops at {report['bits_per_image']:.0f} bits/image: "
              f"PSNR {report['psnr']:.2f} dB / SSIM {report['ssim']:.3f}; equal-bit baseline "
              f"{report['baseline_psnr']:.2f} dB / {report['baseline_ssim']:.3f}; usage {report['code_usage']:.1%}")
    print(f"wrote {write_json(args.out, payload)}")


if __name__ == "__main__":
    main()
