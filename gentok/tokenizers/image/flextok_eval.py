"""Held-out evaluation of FlexTok: quality against the number of tokens kept, beside the equal-bit baseline, and
the coarse-to-fine picture (each row one held-out image: original, then decoded from 1, 2, 4, ..., K tokens)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gentok.hub import atomic_write_json
from gentok.metrics import psnr, ssim
from gentok.tokenizers.image.evaluate import equal_bit_baseline
from gentok.tokenizers.image.io import save_grid


def prefix_lengths(num_tokens: int) -> list[int]:
    """1, 2, 4, ... up to and including K."""
    out, k = [], 1
    while k < num_tokens:
        out.append(k)
        k *= 2
    return out + [num_tokens]


@torch.no_grad()
def decode_prefixes(model, images: Tensor, ks: list[int], steps: int | None = None, guidance: float | None = None,
                    batch_size: int = 64, seed: int = 0) -> dict[int, Tensor]:
    """{k: images decoded from the first k tokens} for held-out `images` (b, 3, S, S); same noise for every k."""
    ids = torch.cat([model.encode(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    out = {}
    for k in ks:
        parts = [model.decode(ids[i:i + batch_size, :k], steps=steps, guidance=guidance, seed=seed + i)
                 for i in range(0, len(ids), batch_size)]
        out[k] = torch.cat(parts)
    return out


def flextok_eval_fn(model, loader: DataLoader) -> dict:
    """`fit` eval hook: held-out PSNR decoded from 1 token and from all K tokens."""
    images = torch.cat(list(loader))
    k_max = model.config.num_tokens
    recons = decode_prefixes(model, images, sorted({1, k_max}))
    return {f"psnr_k{k}": float(psnr(r, images).mean()) for k, r in recons.items()}


def evaluate_flextok(model, dataset: Dataset, limit: int | None = None, steps: int | None = None,
                     guidance: float | None = None) -> dict:
    """PSNR/SSIM per prefix length k beside the area-downsample baseline at k * bits_per_token bits.

    Each k is decoded twice: by flow sampling with `steps` (the images `prefixes.png` shows), and in one step, which
    is the decoder's clean-image estimate from the tokens alone (the mean of what sampling draws from, so the
    highest-PSNR decode; `one_step_psnr` / `one_step_ssim`)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    images = torch.stack([dataset[i] for i in range(n)])
    model.eval()
    ks = prefix_lengths(model.config.num_tokens)
    recons = decode_prefixes(model, images, ks, steps=steps, guidance=guidance)
    one_step = decode_prefixes(model, images, ks, steps=1, guidance=guidance)
    rows = []
    for k in ks:
        bits = k * model.bits_per_token
        base, base_cfg = equal_bit_baseline(images, bits)
        rows.append({"tokens": k, "bits": bits, "psnr": float(psnr(recons[k], images).mean()),
                     "ssim": float(ssim(recons[k], images).mean()),
                     "one_step_psnr": float(psnr(one_step[k], images).mean()),
                     "one_step_ssim": float(ssim(one_step[k], images).mean()),
                     "baseline_psnr": float(psnr(base, images).mean()),
                     "baseline_ssim": float(ssim(base, images).mean()), "baseline": base_cfg})
    return {"images": n, "steps": steps or model.config.sample_steps,
            "guidance": model.config.guidance if guidance is None else guidance, "by_tokens": rows,
            "_tensors": (images, recons)}


def write_flextok_report(report: dict, output_dir: str, n_show: int = 8) -> dict:
    """Write eval.json and prefixes.png; print a one-screen table. Returns the JSON-able report."""
    out = Path(output_dir)
    images, recons = report.pop("_tensors")
    show = images[:n_show]
    # one row per image: original, then k = 1, 2, 4, ..., K
    rows = [torch.stack([show[i]] + [recons[k][i] for k in sorted(recons)]) for i in range(len(show))]
    report["grid"] = str(save_grid(rows, out / "prefixes.png"))
    atomic_write_json(out / "eval.json", report)
    lines = [f"held-out ({report['images']} crops, {report['steps']} flow steps, guidance {report['guidance']}):",
             f"{'tokens':>6} {'bits':>7} {'PSNR':>7} {'SSIM':>6} | {'1-step PSNR':>11} {'SSIM':>6} | "
             f"{'baseline PSNR':>13} {'SSIM':>6}"]
    for r in report["by_tokens"]:
        lines.append(f"{r['tokens']:>6} {r['bits']:>7.0f} {r['psnr']:>7.2f} {r['ssim']:>6.3f} | "
                     f"{r['one_step_psnr']:>11.2f} {r['one_step_ssim']:>6.3f} | "
                     f"{r['baseline_psnr']:>13.2f} {r['baseline_ssim']:>6.3f}")
    lines.append(f"grid (original, then 1, 2, 4, ..., K tokens): {report['grid']}\nreport: {out / 'eval.json'}")
    print("\n".join(lines))
    return report
