"""Image tokenizers at equal bits: FlexTok quality vs tokens kept and decode time vs flow steps, and a rate-distortion
table (TiTok-VQ, TiTok-FSQ, FlexTok at several k, binary latents, area-downsample baseline) on the recipes' held-out
set (`gentok.data.images.default_image_data`: whole photographs and crops of photographs no model trains on), overall
and per held-out source.

    python -m benchmarks.image_tokenizers --flextok outputs/flextok/model --binary outputs/binary/model \\
        --titok outputs/titok/model --titok-fsq outputs/titok-fsq/model

Evaluates trained models (the recipes' OUTPUT_DIR/model); it trains nothing. A model flag that is not given or points
at no model is skipped with a message. Writes benchmarks/results/image_tokenizers.json and .png (PSNR against bits
per image) and prints the tables. FlexTok decode speed is also a ratio against TiTok's single-pass decode of the
same batch, in the same process, when a TiTok model is given.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

import gentok
from benchmarks.common import best_time, parser, pyplot, save_figure, write_json
from gentok.data.images import default_image_data
from gentok.evaluation.image import (
    bit_usage,
    decode_prefixes,
    equal_bit_baseline,
    prefix_lengths,
    quality_by_source,
    reconstruct,
)
from gentok.metrics import psnr, ssim

SIZE = 64  # every CPU preset here works on 64x64 crops


def _load(name: str, path: str | None):
    """(model in eval mode, resolved path), or None (with a printed message) when `path` is not given or missing."""
    if not path:
        print(f"skipping {name}: no model directory given")
        return None
    if not (Path(path) / "config.json").is_file():
        print(f"skipping {name}: no model at {path} (train it with its recipe first)")
        return None
    model = gentok.load(path)
    if model.config.image_size != SIZE:
        raise ValueError(f"{name}: expected a {SIZE}px model, got image_size {model.config.image_size}")
    return model.eval(), str(Path(path).resolve())


def _row(method: str, bits: float, recon: torch.Tensor, images: torch.Tensor, source: str, labels) -> dict:
    base, base_cfg = equal_bit_baseline(images, bits)
    row = {"method": method, "bits": float(bits), "psnr": float(psnr(recon, images).mean()),
           "ssim": float(ssim(recon, images).mean()), "baseline_psnr": float(psnr(base, images).mean()),
           "baseline_ssim": float(ssim(base, images).mean()), "baseline": base_cfg, "source": source}
    row["beats_baseline"] = row["psnr"] > row["baseline_psnr"]
    # per held-out source only (the per-scale rows are in each recipe's eval.json)
    row["by_source"] = [r for r in quality_by_source(recon, images, bits, *labels) if r["scale"] == "all"]
    return row


def main(argv=None) -> dict:
    p = parser(__doc__, out="image_tokenizers.json")
    p.add_argument("--flextok", help="FlexTok model dir (e.g. outputs/flextok/model)")
    p.add_argument("--binary", help="binary tokenizer model dir (e.g. outputs/binary/model)")
    p.add_argument("--titok", help="TiTok (VQ, `tiny` preset) model dir (e.g. outputs/titok/model)")
    p.add_argument("--titok-fsq", help="TiTok (FSQ, `tiny-fsq` preset) model dir")
    p.add_argument("--eval-images", type=int, default=64)
    p.add_argument("--flow-steps", default="1,2,4,8,16,32", help="flow steps for the decode-time sweep")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    _, held = default_image_data(SIZE, eval_length=args.eval_images, seed=args.seed)
    images = torch.stack([held[i] for i in range(len(held))])
    args.labels = (held.sources, held.scales)
    loaded = {"TiTok-VQ": _load("TiTok-VQ", args.titok), "TiTok-FSQ": _load("TiTok-FSQ", args.titok_fsq),
              "binary": _load("binary", args.binary), "FlexTok": _load("FlexTok", args.flextok)}
    models = {k: v for k, v in loaded.items() if v is not None}

    with torch.no_grad():
        result = _measure(models, images, args)
    out = write_json(args.out, result)
    _plot(result["rate_distortion"], out.with_suffix(".png"), result["flextok_by_tokens"])
    _print(result, out)
    return result


def _measure(models: dict, images: torch.Tensor, args) -> dict:
    # rate-distortion at equal bits; the baseline alone when no model was given
    rows, extra = [], {}
    for name in ("TiTok-VQ", "TiTok-FSQ", "binary"):
        if name not in models:
            continue
        model, source = models[name]
        recon, tokens = reconstruct(model, images, batch_size=64)
        label = f"{name} ({type(model.quantizer).__name__})" if name == "binary" else name
        rows.append(_row(label, float(tokens.bits_per_item.mean()), recon, images, source, args.labels))
        if name == "binary":
            extra["binary_bit_usage"] = bit_usage(model.to_bits(tokens))
    by_tokens, timing = [], None
    if "FlexTok" in models:
        flex, flex_source = models["FlexTok"]
        ks = prefix_lengths(flex.config.num_tokens)
        recons = decode_prefixes(flex, images, ks)
        one_step = decode_prefixes(flex, images, ks, steps=1)  # the decoder's clean-image estimate from the tokens
        for k in ks:
            row = _row(f"FlexTok k={k}", k * flex.bits_per_token, recons[k], images, flex_source, args.labels)
            rows.append(row)
            by_tokens.append({"tokens": k, **{key: row[key] for key in ("bits", "psnr", "ssim", "baseline_psnr")},
                              "one_step_psnr": float(psnr(one_step[k], images).mean()),
                              "one_step_ssim": float(ssim(one_step[k], images).mean())})
        # decode time against flow steps (k = K), and as a ratio to TiTok's one-pass decode of the same batch
        batch = images[:16]
        titok_s = None
        if "TiTok-VQ" in models:
            titok = models["TiTok-VQ"][0]
            titok_tokens = titok.encode(batch)
            titok_s = best_time(lambda: titok.decode(titok_tokens), args.repeats)[0]
        flex_tokens = flex.encode(batch)
        all_tokens = flex.encode(images)
        by_steps = []
        for steps in (int(s) for s in args.flow_steps.split(",")):
            t = best_time(lambda: flex.decode(flex_tokens, steps=steps), args.repeats)[0]
            recon = flex.decode(all_tokens, steps=steps)
            by_steps.append({"flow_steps": steps, "seconds_per_batch": t,
                             "ratio_vs_titok_decode": t / titok_s if titok_s else None,
                             "psnr_k_max": float(psnr(recon, images).mean()),
                             "ssim_k_max": float(ssim(recon, images).mean())})
        timing = {"batch": len(batch), "titok_decode_seconds": titok_s, "by_steps": by_steps}
    if not rows:  # nothing given: the baseline curve alone still tells the reader what the bits buy
        for bits in (16, 64, 128, 320, 512):
            base, base_cfg = equal_bit_baseline(images, bits)
            rows.append(_row("baseline only", bits, base, images, "area-downsample baseline", args.labels))

    return {
        "held_out": {"images": len(images), "size": SIZE,
                     "source": "whole photographs and native/region crops of scikit-image coffee + motorcycle "
                               "(held-out photographs) and matplotlib grace_hopper (a held-out source)",
                     "by_source": dict(Counter(args.labels[0])), "by_scale": dict(Counter(args.labels[1]))},
        "models": {k: v[1] for k, v in models.items()},
        "skipped": [k for k in ("TiTok-VQ", "TiTok-FSQ", "binary", "FlexTok") if k not in models],
        "flow_steps_default": models["FlexTok"][0].config.sample_steps if "FlexTok" in models else None,
        "rate_distortion": rows,
        "flextok_by_tokens": by_tokens,
        "flextok_decode_time": timing,
        **extra,
    }


def _plot(rows: list[dict], path: Path, by_tokens: list[dict] | None = None) -> None:
    fig, ax = pyplot().subplots(figsize=(6, 4))
    flex = [r for r in rows if r["method"].startswith("FlexTok")]
    ax.plot([r["bits"] for r in flex], [r["psnr"] for r in flex], "o-", label="FlexTok (k = 1, 2, 4, ...)")
    if by_tokens:
        ax.plot([r["bits"] for r in by_tokens], [r["one_step_psnr"] for r in by_tokens], "o:",
                label="FlexTok, 1-step decode")
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
    save_figure(fig, path, dpi=120)


def _print(result: dict, out: Path) -> None:
    lines = [f"rate-distortion on {result['held_out']['images']} held-out {SIZE}px images (whole photographs and crops):",
             f"{'method':<24} {'bits':>6} {'PSNR':>6} {'SSIM':>6} | {'base PSNR':>9} {'base SSIM':>9}  baseline"]
    for r in result["rate_distortion"]:
        b = r["baseline"]
        lines.append(f"{r['method']:<24} {r['bits']:>6.0f} {r['psnr']:>6.2f} {r['ssim']:>6.3f} | "
                     f"{r['baseline_psnr']:>9.2f} {r['baseline_ssim']:>9.3f}  {b['resolution']}px x "
                     f"{b['bits_per_channel']}b")
    sources = sorted({s["source"] for r in result["rate_distortion"] for s in r["by_source"]})
    lines.append(f"\nper held-out source, PSNR (baseline PSNR): {' | '.join(sources)}")
    for r in result["rate_distortion"]:
        by = {s["source"]: s for s in r["by_source"]}
        lines.append(f"{r['method']:<24} " + " | ".join(f"{by[s]['psnr']:6.2f} ({by[s]['baseline_psnr']:5.2f})"
                                                         for s in sources))
    if result["flextok_by_tokens"]:
        lines.append(f"\nFlexTok held-out quality against tokens kept ({result['flow_steps_default']} flow steps):")
        lines.append(f"{'tokens':>6} {'bits':>6} {'PSNR':>6} {'SSIM':>6} {'1-step PSNR':>11} {'SSIM':>6} "
                     f"{'base PSNR':>9}")
        for r in result["flextok_by_tokens"]:
            lines.append(f"{r['tokens']:>6} {r['bits']:>6.0f} {r['psnr']:>6.2f} {r['ssim']:>6.3f} "
                         f"{r['one_step_psnr']:>11.2f} {r['one_step_ssim']:>6.3f} {r['baseline_psnr']:>9.2f}")
    t = result["flextok_decode_time"]
    if t:
        ref = f"{t['titok_decode_seconds']:.3f} s" if t["titok_decode_seconds"] else "no TiTok given"
        lines.append(f"\nFlexTok decode of {t['batch']} images (k = K) vs TiTok decode ({ref}):")
        lines.append(f"{'steps':>6} {'seconds':>8} {'x TiTok':>8} {'PSNR':>6} {'SSIM':>6}")
        for r in t["by_steps"]:
            ratio = f"{r['ratio_vs_titok_decode']:>8.1f}" if r["ratio_vs_titok_decode"] else f"{'-':>8}"
            lines.append(f"{r['flow_steps']:>6} {r['seconds_per_batch']:>8.3f} {ratio} {r['psnr_k_max']:>6.2f} "
                         f"{r['ssim_k_max']:>6.3f}")
    if "binary_bit_usage" in result:
        u = result["binary_bit_usage"]
        lines.append(f"\nbinary per-bit entropy (1 = balanced): mean {u['bit_entropy_mean']:.3f}, min "
                     f"{u['bit_entropy_min']:.3f}, per position {u['bit_entropy_per_position']:.3f}; "
                     f"bits used {u['bits_used']:.0%}")
    if result["skipped"]:
        lines.append(f"skipped (no model): {', '.join(result['skipped'])}")
    lines.append(f"\n-> {out} and {out.with_suffix('.png')}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
