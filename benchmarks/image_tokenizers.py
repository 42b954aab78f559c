"""Image tokenizers at equal bits: FlexTok quality vs tokens kept and decode time vs flow steps, and a rate-distortion
table (TiTok-VQ, TiTok-FSQ, FlexTok at several k, binary latents, area-downsample baseline) on the same held-out crops.

    python -m benchmarks.image_tokenizers                                # trains every model briefly (--train-steps)
    python -m benchmarks.image_tokenizers --flextok outputs/flextok/model --binary outputs/binary/model \\
        --titok outputs/titok/model --titok-fsq outputs/titok-fsq/model   # evaluates recipe outputs instead

Writes benchmarks/results/image_tokenizers.json and .png (PSNR against bits per image) and prints the tables.
Decode speed is a ratio against TiTok's single-pass decode of the same batch, in the same process.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # `python benchmarks/image_tokenizers.py`: benchmarks/recsys.py would shadow recsys/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gentok  # noqa: E402
from gentok.data.images import default_image_data
from gentok.hub import atomic_write_json
from gentok.metrics import psnr, ssim
from gentok.tokenizers.image.binary import PRESETS as BINARY_PRESETS
from gentok.tokenizers.image.binary import BinaryTokenizer
from gentok.tokenizers.image.evaluate import equal_bit_baseline
from gentok.tokenizers.image.flextok import PRESETS as FLEXTOK_PRESETS
from gentok.tokenizers.image.flextok import FlexTok
from gentok.tokenizers.image.flextok_eval import decode_prefixes, prefix_lengths
from gentok.tokenizers.image.titok import PRESETS as TITOK_PRESETS
from gentok.tokenizers.image.titok import TiTok
from gentok.training import TrainConfig, fit

SIZE = 64  # every CPU preset here works on 64x64 crops


def _load_or_train(name: str, path: str | None, build, steps: int, work_dir: Path, seed: int):
    if path:
        model = gentok.load(path)
        source = str(Path(path).resolve())
    else:
        train, _ = default_image_data(SIZE, seed=seed)
        cfg = TrainConfig(output_dir=str(work_dir / name), max_steps=steps, batch_size=32, lr=2e-3, warmup_steps=20,
                          min_lr_ratio=0.05, eval_every=0, checkpoint_every=0, log_every=10, seed=seed)
        model = fit(build(), train, cfg).model
        source = f"trained here for {steps} steps"
    if model.config.image_size != SIZE:
        raise ValueError(f"{name}: expected a {SIZE}px model, got image_size {model.config.image_size}")
    return model.eval(), source


def _row(method: str, bits: float, recon: torch.Tensor, images: torch.Tensor, source: str) -> dict:
    base, base_cfg = equal_bit_baseline(images, bits)
    row = {"method": method, "bits": float(bits), "psnr": float(psnr(recon, images).mean()),
           "ssim": float(ssim(recon, images).mean()), "baseline_psnr": float(psnr(base, images).mean()),
           "baseline_ssim": float(ssim(base, images).mean()), "baseline": base_cfg, "source": source}
    row["beats_baseline"] = row["psnr"] > row["baseline_psnr"]
    return row


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flextok", help="FlexTok model dir (default: train the tiny preset briefly)")
    p.add_argument("--binary", help="binary tokenizer model dir")
    p.add_argument("--titok", help="TiTok (VQ, `tiny` preset) model dir")
    p.add_argument("--titok-fsq", help="TiTok (FSQ, `tiny-fsq` preset) model dir")
    p.add_argument("--train-steps", type=int, default=300, help="steps for every model not given by flag")
    p.add_argument("--eval-images", type=int, default=64)
    p.add_argument("--flow-steps", default="1,2,4,8,16,32", help="flow steps for the decode-time sweep")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work-dir", default="outputs/bench_image_tokenizers")
    p.add_argument("--out", default="benchmarks/results/image_tokenizers.json")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    work = Path(args.work_dir)
    _, held = default_image_data(SIZE, eval_length=args.eval_images, seed=args.seed)
    images = torch.stack([held[i] for i in range(len(held))])

    models = {
        "TiTok-VQ": _load_or_train("titok", args.titok, lambda: TiTok(TITOK_PRESETS["tiny"]), args.train_steps, work,
                                   args.seed),
        "TiTok-FSQ": _load_or_train("titok-fsq", args.titok_fsq, lambda: TiTok(TITOK_PRESETS["tiny-fsq"]),
                                    args.train_steps, work, args.seed),
        "binary": _load_or_train("binary", args.binary, lambda: BinaryTokenizer(BINARY_PRESETS["tiny"]),
                                 args.train_steps, work, args.seed),
        "FlexTok": _load_or_train("flextok", args.flextok, lambda: FlexTok(FLEXTOK_PRESETS["tiny"]),
                                  args.train_steps, work, args.seed),
    }

    with torch.no_grad():
        result = _measure(models, images, args)
    out = Path(args.out)
    atomic_write_json(out, result)
    _plot(result["rate_distortion"], out.with_suffix(".png"))
    _print(result, out)
    return result


def _measure(models: dict, images: torch.Tensor, args) -> dict:
    # rate-distortion at equal bits
    rows = []
    for name in ("TiTok-VQ", "TiTok-FSQ", "binary"):
        model, source = models[name]
        recon = torch.cat([model.decode(model.encode(images[i:i + 64])) for i in range(0, len(images), 64)])
        label = f"{name} ({type(model.quantizer).__name__})" if name == "binary" else name
        rows.append(_row(label, model.bits_per_sample, recon, images, source))
    flex, flex_source = models["FlexTok"]
    ks = prefix_lengths(flex.config.num_tokens)
    recons = decode_prefixes(flex, images, ks)
    by_tokens = []
    for k in ks:
        row = _row(f"FlexTok k={k}", k * flex.bits_per_token, recons[k], images, flex_source)
        rows.append(row)
        by_tokens.append({"tokens": k, **{key: row[key] for key in ("bits", "psnr", "ssim", "baseline_psnr")}})

    # FlexTok decode time against flow steps, as a ratio to TiTok's one-pass decode of the same batch
    titok = models["TiTok-VQ"][0]
    batch = images[:16]
    titok_ids = titok.encode(batch)
    titok_s = _timed(lambda: titok.decode(titok_ids), args.repeats)
    flex_ids = flex.encode(batch)
    timing = []
    for steps in (int(s) for s in args.flow_steps.split(",")):
        t = _timed(lambda: flex.decode(flex_ids, steps=steps), args.repeats)
        recon = flex.decode(flex.encode(images), steps=steps)
        timing.append({"flow_steps": steps, "seconds_per_batch": t, "ratio_vs_titok_decode": t / titok_s,
                       "psnr_k_max": float(psnr(recon, images).mean())})

    return {
        "held_out": {"images": len(images), "size": SIZE, "source": "scikit-image coffee + motorcycle crops"},
        "flow_steps_default": flex.config.sample_steps,
        "rate_distortion": rows,
        "flextok_by_tokens": by_tokens,
        "flextok_decode_time": {"batch": len(batch), "titok_decode_seconds": titok_s, "by_steps": timing},
        "machine": {"torch_threads": torch.get_num_threads(), "platform": platform.platform()},
    }


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    flex = [r for r in rows if r["method"].startswith("FlexTok")]
    ax.plot([r["bits"] for r in flex], [r["psnr"] for r in flex], "o-", label="FlexTok (k = 1, 2, 4, ...)")
    for r in rows:
        if not r["method"].startswith("FlexTok"):
            ax.plot(r["bits"], r["psnr"], "s", label=r["method"])
    base = sorted(rows, key=lambda r: r["bits"])
    ax.plot([r["bits"] for r in base], [r["baseline_psnr"] for r in base], "k--", label="downsample baseline")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per 64x64 image")
    ax.set_ylabel("held-out PSNR (dB)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    from gentok.hub import atomic_write_bytes

    atomic_write_bytes(path, buf.getvalue())


def _print(result: dict, out: Path) -> None:
    lines = [f"rate-distortion on {result['held_out']['images']} held-out {SIZE}px crops:",
             f"{'method':<24} {'bits':>6} {'PSNR':>6} {'SSIM':>6} | {'base PSNR':>9} {'base SSIM':>9}  baseline"]
    for r in result["rate_distortion"]:
        b = r["baseline"]
        lines.append(f"{r['method']:<24} {r['bits']:>6.0f} {r['psnr']:>6.2f} {r['ssim']:>6.3f} | "
                     f"{r['baseline_psnr']:>9.2f} {r['baseline_ssim']:>9.3f}  {b['resolution']}px x "
                     f"{b['bits_per_channel']}b")
    t = result["flextok_decode_time"]
    lines.append(f"\nFlexTok decode of {t['batch']} images (k = K) vs TiTok decode "
                 f"({t['titok_decode_seconds']:.3f} s):")
    lines.append(f"{'steps':>6} {'seconds':>8} {'x TiTok':>8} {'PSNR':>6}")
    for r in t["by_steps"]:
        lines.append(f"{r['flow_steps']:>6} {r['seconds_per_batch']:>8.3f} {r['ratio_vs_titok_decode']:>8.1f} "
                     f"{r['psnr_k_max']:>6.2f}")
    lines.append(f"\n-> {out} and {out.with_suffix('.png')}")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
