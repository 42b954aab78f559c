"""TiTok speed per preset and held-out quality of a trained model beside the equal-bit baseline.

    python -m benchmarks.titok --model outputs/titok/model [--presets tiny,small,S-128,B-64,L-32] [--compile]

Speed: encode and decode images/s of each preset at its own size (random weights: speed does not depend on them),
with the share of this machine's measured float32 matmul throughput that the model's FLOPs reach. With --compile,
also the same model after `TiTok.compile(freeze=True)`, timed interleaved with eager: its one-off compile seconds
(first encode and decode) are reported apart, with the compiled/eager speed ratios and the largest output difference.
Quality (for --model, e.g. the output of `accelerate launch recipes/titok.py`): PSNR/SSIM on held-out crops of
photographs the model never trained on, the area-downsample/bilinear-upsample baseline at the same bits per image,
and codebook usage. Writes benchmarks/results/titok.json.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import gentok
from benchmarks.common import interleaved, matmul_gflops, parser, print_table, timed, write_json
from gentok.data.images import default_image_data
from gentok.evaluation.image import evaluate_image_tokenizer
from gentok.tokenizers.image.titok import PRESETS, TiTok

BATCH = {"tiny": 32, "tiny-fsq": 32, "small": 32, "S-128": 4, "B-64": 2, "L-32": 1}


def flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def compiled_speed(model: TiTok, x: torch.Tensor, tokens, repeats: int) -> dict:
    """Compile a copy of `model`; first-call seconds apart, then compiled vs eager interleaved (ratio > 1: faster)."""
    comp = copy.deepcopy(model)
    with torch.no_grad():
        comp.compile(freeze=True)
        t0 = time.perf_counter()
        comp_tokens = comp.encode(x)
        t1 = time.perf_counter()
        comp_img = comp.decode(tokens)
        t2 = time.perf_counter()
        t = interleaved({"encode": lambda: model.encode(x), "compiled_encode": lambda: comp.encode(x),
                         "decode": lambda: model.decode(tokens), "compiled_decode": lambda: comp.decode(tokens)},
                        repeats=repeats)
        diff = float((comp_img - model.decode(tokens)).abs().max())
    return {"compile_encode_s": t1 - t0, "compile_decode_s": t2 - t1,
            "compiled_ids_agree": bool(torch.equal(comp_tokens.ids, tokens.ids)), "compiled_decode_max_diff": diff,
            "compiled_encode_speedup": t["encode"] / t["compiled_encode"],
            "compiled_decode_speedup": t["decode"] / t["compiled_decode"]}


def speed(name: str, repeats: int, gflops: float, compile: bool = False) -> dict:
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
    extra = compiled_speed(model, x, tokens, repeats) if compile else {}
    return {
        "preset": name, "image_size": cfg.image_size, "tokens": cfg.num_tokens,
        "bits_per_image": model.bits_per_token * model.tokens_per_item, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "batch": b, "encode_images_per_s": b / enc_s, "decode_images_per_s": b / dec_s,
        "encode_matmul_share": enc_f / enc_s / 1e9 / gflops, "decode_matmul_share": dec_f / dec_s / 1e9 / gflops,
        **extra,
    }


def main(argv=None):
    p = parser(__doc__, out="titok.json")
    p.add_argument("--model", default="outputs/titok/model", help="trained tokenizer to evaluate ('' to skip)")
    p.add_argument("--presets", default="tiny,small,S-128,B-64,L-32")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--eval-crops", type=int, default=256)
    p.add_argument("--compile", action="store_true", help="also time each preset after TiTok.compile(freeze=True)")
    p.add_argument("--merge", action="store_true",
                   help="keep the speed rows of presets not re-measured now from the existing --out file (and its "
                        "quality section when --model '' skips the quality run)")
    args = p.parse_args(argv)
    gflops = matmul_gflops()
    from tqdm import tqdm

    names = [n for n in args.presets.split(",") if n]
    rows = [{**speed(n, args.repeats, gflops, args.compile), "matmul_gflops_then": gflops}
            for n in tqdm(names, desc="presets")]
    old = Path(args.out)
    prev = json.loads(old.read_text()) if args.merge and old.is_file() else {}
    if prev:
        kept = [{"matmul_gflops_then": prev.get("matmul_gflops"), **r} for r in prev.get("speed", [])
                if r["preset"] not in names]
        rows = kept + rows
    print(f"matmul throughput: {gflops:.1f} GFLOP/s")
    print_table(rows, ["preset", "image_size", "tokens", "bits_per_image", "params_m", "encode_images_per_s",
                       "decode_images_per_s", "encode_matmul_share", "decode_matmul_share"])
    if args.compile:
        print_table(rows, ["preset", "compile_encode_s", "compile_decode_s", "compiled_encode_speedup",
                           "compiled_decode_speedup", "compiled_ids_agree", "compiled_decode_max_diff"],
                    title="torch.compile(freeze) vs eager, same process (speedup > 1: compiled faster)")
    payload = {"matmul_gflops": gflops, "speed": rows}
    if not args.model and "quality" in prev:
        payload["quality"] = prev["quality"]
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
