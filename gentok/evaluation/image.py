"""Held-out evaluation of image tokenizers, one module for every image model: measure (`evaluate_image_tokenizer`
-> report dict), then write (`write_report` -> eval.json, pictures, a one-screen summary); `image_eval_fn` is the
`fit` eval hook.

Every model gets PSNR/SSIM of decode(encode(x)), whole-set codebook usage of its ids, and an honest equal-bit
baseline at the same bits per image (area-downsample, uniform colour quantization, bilinear upsample). What a model
is adds parts of the report, read from its properties, never from its class:
- `model.decodes_prefixes` (FlexTok): quality against the number of tokens kept, k = 1, 2, 4, ..., K, each beside
  the baseline at k x bits_per_token bits, and the coarse-to-fine picture `prefixes.png`. A model whose decode
  samples (its `default_decode_options` has `steps`) is also decoded in one step: the decoder's clean-image estimate
  from the tokens alone, the mean of what sampling draws from, so the highest-PSNR decode.
- `model.to_bits` (binary latents): per-bit utilisation (`bit_usage`); for bit tokens it, not the share of the 2**B
  patterns hit, says whether the rate is used.
Given Inception weights (a local file, or the explicit request to download them) the report adds rFID of the
reconstructions against the held-out images, their Inception Score and precision/recall (`gentok.evaluation.fid`).
What the dataset is adds parts too: a held-out set that labels its items (`dataset.sources`, `dataset.scales`, as
`gentok.data.images.HeldOutViews` does) gets the same figures per source, and per source and scale (`by_source`), and
a grid that starts with whole photographs before the crops.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from gentok.evaluation.fid import distribution_report, inception_features
from gentok.files import atomic_write_json
from gentok.metrics import CodebookStats, perceptual_metrics_or_skip, psnr, ssim
from gentok.tokenizers.image.assets import save_grid
from gentok.tokenizers.tokens import Tokens


# -- pieces ---------------------------------------------------------------------------------------------------------
def _collect(dataset: Dataset, limit: int | None = None) -> Tensor:
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    return torch.stack([dataset[i] for i in range(n)])


def decode_options_of(model, options: dict) -> dict:
    """The model's default decode options overridden by the given ones that are not None."""
    given = {k: v for k, v in options.items() if v is not None}
    return {**model.default_decode_options, **given}


@torch.no_grad()
def reconstruct(model, images: Tensor, batch_size: int = 64, **decode_options) -> tuple[Tensor, Tokens]:
    """(recon (b, 3, S, S), tokens) of `images` through `model.encode` / `model.decode`, in batches."""
    device = _device(model)
    parts = [model.encode(images[i:i + batch_size].to(device)).to("cpu") for i in range(0, len(images), batch_size)]
    tokens = Tokens.cat(parts)
    recon = torch.cat([model.decode(t, **decode_options).cpu() for t in parts])
    return recon, tokens


def _device(model) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def prefix_lengths(num_tokens: int) -> list[int]:
    """1, 2, 4, ... up to and including K."""
    out, k = [], 1
    while k < num_tokens:
        out.append(k)
        k *= 2
    return out + [num_tokens]


@torch.no_grad()
def _decode_prefixes(model, ids: Tensor, ks: list[int], batch_size: int, options: dict) -> dict[int, Tensor]:
    return {k: torch.cat([model.decode(ids[i:i + batch_size, :k], **options).cpu()
                          for i in range(0, len(ids), batch_size)]) for k in ks}


@torch.no_grad()
def decode_prefixes(model, images: Tensor, ks: list[int], batch_size: int = 64, **decode_options) -> dict[int, Tensor]:
    """{k: images decoded from the first k tokens} for `images` (b, 3, S, S), for a model whose prefixes decode."""
    ids = torch.cat([model.encode(images[i:i + batch_size].to(_device(model))).ids.cpu()
                     for i in range(0, len(images), batch_size)])
    return _decode_prefixes(model, ids, ks, batch_size, decode_options)


def bit_usage(bits: Tensor) -> dict:
    """Per-bit utilisation of bits (b, K, B): each bit's entropy in bits (1 = on for half the tokens, 0 = constant),
    pooled over tokens and per token position (a bit can be balanced over the sequence yet fixed at every
    position). `bit_entropy` lists the pooled entropy of every bit."""
    def h(p: Tensor) -> Tensor:  # binary entropy in bits; 0 log 0 = 0, so a constant bit has exactly 0
        return -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p)) / math.log(2)

    f = bits.float()
    pooled = h(f.mean((0, 1)))  # (B,)
    per_position = h(f.mean(0))  # (K, B)
    return {"bit_ones": float(f.mean()), "bit_entropy_mean": float(pooled.mean()),
            "bit_entropy_min": float(pooled.min()), "bits_used": float((pooled > 0.5).float().mean()),
            "bit_entropy_per_position": float(per_position.mean()), "bit_entropy": [float(v) for v in pooled]}


def equal_bit_baseline(images: Tensor, bits: float) -> tuple[Tensor, dict]:
    """Best fixed (resolution r, bits per channel q) with 3 * r * r * q <= `bits`: area-downsample to r x r,
    quantize each channel uniformly to 2**q levels, bilinear-upsample back. Chosen on mean PSNR over `images`."""
    size = images.shape[-1]
    best = None
    for q in range(1, 9):
        r = int(math.isqrt(int(bits // (3 * q))))
        if r < 1:
            continue
        r = min(r, size)
        small = F.interpolate(images, size=(r, r), mode="area")
        levels = 2**q - 1
        small = (small * levels).round() / levels
        up = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
        score = float(psnr(up, images).mean())
        if best is None or score > best[0]:
            best = (score, up, {"resolution": r, "bits_per_channel": q, "bits": 3 * r * r * q})
    if best is None:
        raise ValueError(f"a budget of {bits} bits is too small for the baseline")
    return best[1], best[2]


def _labels(dataset, n: int) -> tuple[list[str], list[str]] | None:
    """(sources, scales) of the first n items when the dataset labels them, else None."""
    sources, scales = getattr(dataset, "sources", None), getattr(dataset, "scales", None)
    if sources is None:
        return None
    return list(sources[:n]), list(scales[:n]) if scales is not None else ["all"] * n


def quality_by_source(recon: Tensor, images: Tensor, bits: float, sources: list[str], scales: list[str],
                      ids: Tensor | None = None, vocab_size: int = 0, num_codebooks: int = 1) -> list[dict]:
    """Rows of PSNR/SSIM beside the equal-bit baseline (chosen on each group's own images), per source (`scale`
    "all") and per (source, scale), for images (b, 3, S, S) labelled by `sources` / `scales`; with `ids` (b, ...)
    also each group's codebook usage."""
    if not len(sources) == len(scales) == len(images):
        raise ValueError(f"expected one source and scale per image, got {len(sources)} and {len(scales)} for "
                         f"{len(images)} images")
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (src, sc) in enumerate(zip(sources, scales)):
        groups.setdefault((src, "all"), []).append(i)
        groups.setdefault((src, sc), []).append(i)
    order = {"all": 0, "native": 1, "region": 2, "whole": 3}
    rows = []
    for (src, sc), idx in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9), kv[0][1])):
        if sc != "all" and len(idx) == len(groups[(src, "all")]):
            continue  # a source seen at one scale only: its "all" row says it
        x, y = images[idx], recon[idx]
        base, base_cfg = equal_bit_baseline(x, bits)
        row = {"source": src, "scale": sc, "images": len(idx), **_quality(y, x), **_quality(base, x, "baseline_"),
               "baseline": base_cfg}
        if ids is not None:
            stats = CodebookStats(vocab_size, num_codebooks)
            stats.update(ids[idx])
            row.update({f"code_{k}": v for k, v in stats.compute().items()})
        rows.append(row)
    return rows


def _quality(recon: Tensor, images: Tensor, prefix: str = "") -> dict:
    return {f"{prefix}psnr": float(psnr(recon, images).mean()), f"{prefix}ssim": float(ssim(recon, images).mean())}


# -- fit hook -------------------------------------------------------------------------------------------------------
def image_eval_fn(model, loader: DataLoader) -> dict:
    """`fit` eval hook: PSNR and codebook usage over the held-out loader; PSNR from 1 token where prefixes decode;
    per-bit utilisation for bit tokens."""
    stats = CodebookStats(model.vocab_size, model.num_codebooks)
    prefixes, has_bits = model.decodes_prefixes, model.has_bits
    total, total_k1, n, bits = 0.0, 0.0, 0, []
    # a held-out set that labels its items and is read in order (fit's eval loader does not shuffle): PSNR per source
    sources = getattr(loader.dataset, "sources", None) if isinstance(loader.sampler, SequentialSampler) else None
    per_source: dict[str, list[float]] = {}
    with torch.no_grad():
        for batch in loader:
            tokens = model.encode(batch)
            stats.update(tokens.ids)
            item_psnr = psnr(model.decode(tokens), batch)
            total += float(item_psnr.sum())
            if sources is not None:
                for src, v in zip(sources[n:n + len(batch)], item_psnr.tolist()):
                    per_source.setdefault(src, []).append(v)
            if prefixes:
                total_k1 += float(psnr(model.decode(tokens.ids[:, :1]), batch).sum())
            if has_bits:
                bits.append(model.to_bits(tokens))
            n += len(batch)
    out = {"psnr": total / max(n, 1), **{f"code_{k}": v for k, v in stats.compute().items()}}
    out.update({f"psnr_{src}": sum(v) / len(v) for src, v in per_source.items()})
    if prefixes:
        out["psnr_k1"] = total_k1 / max(n, 1)
    if bits:
        usage = bit_usage(torch.cat(bits))
        usage.pop("bit_entropy")  # the per-bit list goes to eval.json, not the scalar log
        out.update(usage)
    return out


# -- measure --------------------------------------------------------------------------------------------------------
def evaluate_image_tokenizer(model, dataset: Dataset, limit: int | None = None, perceptual_weights: str | None = None,
                             batch_size: int = 64, inception_weights: str | None = None,
                             download_inception: bool = False, distribution_features: nn.Module | None = None,
                             **decode_options) -> dict:
    """Measure `model` on the first `limit` images of `dataset` (each (3, S, S) in [0, 1]).

    Args:
        inception_weights / download_inception: the Inception network's weights file, or the explicit request to
            download them: adds rFID (reconstructions against the held-out images), the Inception Score of the
            reconstructions and precision/recall (`gentok.evaluation.fid`); without either they are skipped.
        distribution_features: another feature network for those metrics (images -> features or {"features",
            "logits"}), in place of Inception.
        decode_options: keyword options of `model.decode` (FlexTok: `steps`, `guidance`); None means the default.
    Returns:
        the report: images, tokens/bits per image, PSNR/SSIM, the equal-bit baseline, `code_*` usage, the decode
        options used, and the parts the model's properties call for (module docstring): `by_tokens` rows, `bit_*`
        utilisation; `rfid`, `inception_score(_std)`, `precision`, `recall` with Inception weights;
        `by_source` rows (`quality_by_source`) when the dataset labels its items. `_tensors` holds the
        pictures' tensors for `write_report`.
    """
    images = _collect(dataset, limit)
    model.eval()
    options = decode_options_of(model, decode_options)
    recon, tokens = reconstruct(model, images, batch_size, **options)
    stats = CodebookStats(model.vocab_size, model.num_codebooks)
    stats.update(tokens.ids)
    bits_per_image = float(tokens.bits_per_item.mean())
    base, base_cfg = equal_bit_baseline(images, bits_per_image)
    report = {"images": len(images), "tokens_per_image": float(tokens.lengths.float().mean()),
              "bits_per_token": float(tokens.bits_per_token), "bits_per_image": bits_per_image, **options,
              **_quality(recon, images), **_quality(base, images, "baseline_"), "baseline": base_cfg,
              **{f"code_{k}": v for k, v in stats.compute().items()}}
    report.update(perceptual_metrics_or_skip(perceptual_weights, images, recon))
    features = distribution_features or inception_features(inception_weights, download_inception, _device(model))
    if features is not None:
        dist = distribution_report(features, recon, real=images, batch_size=batch_size)
        report.update({"rfid": dist.pop("fid"), **{k: v for k, v in dist.items() if not k.startswith("n_")}})
    labels = _labels(dataset, len(images))
    if labels is not None:
        report["by_source"] = quality_by_source(recon, images, bits_per_image, *labels, ids=tokens.ids,
                                                vocab_size=model.vocab_size, num_codebooks=model.num_codebooks)
    tensors = {"images": images, "recon": recon, "baseline": base}
    if labels is not None:
        tensors["scales"] = labels[1]
    if model.decodes_prefixes:
        report["by_tokens"], tensors["prefixes"] = _by_prefix(model, images, tokens.ids, recon, batch_size, options)
    if model.has_bits:
        report.update(bit_usage(model.to_bits(tokens)))
    report["_tensors"] = tensors
    return report


def _by_prefix(model, images: Tensor, ids: Tensor, full: Tensor, batch_size: int, options: dict):
    """Rows of quality per prefix length k (beside the baseline at k tokens' bits) and {k: decoded images}."""
    ks = prefix_lengths(ids.shape[1])
    recons = {**_decode_prefixes(model, ids, ks[:-1], batch_size, options), ks[-1]: full}
    one_step = _decode_prefixes(model, ids, ks, batch_size, {**options, "steps": 1}) if "steps" in options else None
    rows = []
    for k in ks:
        bits = k * model.bits_per_token
        base, base_cfg = equal_bit_baseline(images, bits)
        row = {"tokens": k, "bits": bits, **_quality(recons[k], images)}
        if one_step is not None:
            row.update(_quality(one_step[k], images, "one_step_"))
        rows.append({**row, **_quality(base, images, "baseline_"), "baseline": base_cfg})
    return rows, recons


# -- write ----------------------------------------------------------------------------------------------------------
def write_report(report: dict, model, dataset, output_dir: str, n_show: int = 8) -> dict:
    """Write eval.json, reconstructions.png (rows: originals, reconstructions, equal-bit baseline, labelled on the
    left; the first columns are whole photographs when the set labels its scales, then crops, labelled on top) and,
    where prefixes decode, prefixes.png (each row one image: original, then decoded from 1, 2, 4, ..., K tokens, the
    columns labelled); print a one-screen summary. `model` and
    `dataset` are what `report` measured (the summary names the model). Returns the JSON-able report."""
    out = Path(output_dir)
    tensors = report.pop("_tensors")
    show = grid_indices(tensors.get("scales"), len(tensors["images"]), n_show)
    report["grid_scales"] = [tensors["scales"][i] for i in show] if "scales" in tensors else None
    images = tensors["images"][show]
    report["grid"] = str(save_grid([images, tensors["recon"][show], tensors["baseline"][show]],
                                   out / "reconstructions.png",
                                   row_labels=["held-out", "reconstruction", "equal-bit baseline"],
                                   col_labels=report["grid_scales"]))
    if "prefixes" in tensors:
        recons = {k: v[show] for k, v in tensors["prefixes"].items()}
        rows = [torch.stack([images[i]] + [recons[k][i] for k in sorted(recons)]) for i in range(len(images))]
        report["prefix_grid"] = str(save_grid(rows, out / "prefixes.png", row_labels=report["grid_scales"],
                                              col_labels=["held-out"] + [f"{k} tok" for k in sorted(recons)]))
    atomic_write_json(out / "eval.json", report)
    print(_summary(report, getattr(model, "model_type", None) or type(model).__name__, out))
    return report


def grid_indices(scales: list[str] | None, n: int, n_show: int) -> list[int]:
    """Which of n images a grid shows: up to half whole photographs first (when `scales` labels them), then the
    other images in order."""
    if scales is None:
        return list(range(min(n, n_show)))
    whole = [i for i in range(n) if scales[i] == "whole"][:n_show // 2]
    rest = [i for i in range(n) if i not in set(whole)]
    return whole + rest[:n_show - len(whole)]


def _summary(r: dict, name: str, out: Path) -> str:
    base = r["baseline"]
    if "bits_used" in r:  # bit tokens: how much each bit is used, not how many of the 2**B patterns were hit
        usage = f"bits used {r['bits_used']:.0%}, mean bit entropy {r['bit_entropy_mean']:.2f}"
    else:
        usage = f"codebook usage {r['code_usage']:.1%}"
    options = {k: r[k] for k in ("steps", "guidance") if k in r}
    lines = [f"{name} held-out ({r['images']} images, {r['bits_per_image']:.0f} bits/image"
             + "".join(f", {k} {v}" for k, v in options.items()) + f"): PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.3f}"
             f" | equal-bit baseline PSNR {r['baseline_psnr']:.2f} dB, SSIM {r['baseline_ssim']:.3f} "
             f"({base['resolution']}px x {base['bits_per_channel']} bits) | {usage}"]
    if "by_source" in r:
        lines.append(f"{'held-out source':<16} {'scale':<7} {'images':>6} {'PSNR':>7} {'SSIM':>6} | "
                     f"{'baseline PSNR':>13} {'SSIM':>6} | {'codes used':>10}")
        for row in r["by_source"]:
            lines.append(f"{row['source'][:16]:<16} {row['scale']:<7} {row['images']:>6} {row['psnr']:>7.2f} "
                         f"{row['ssim']:>6.3f} | {row['baseline_psnr']:>13.2f} {row['baseline_ssim']:>6.3f} | "
                         f"{row.get('code_usage', float('nan')):>10.1%}")
    if "rfd" in r:  # --perceptual-weights: reconstruction Frechet distance and feature error of a vision model
        lines.append(f"perceptual (features of the given vision model): rFD {r['rfd']:.3f}, "
                     f"feature L2 {r['feature_l2']:.3f}")
    if "rfid" in r:  # --inception-weights: the field's distribution metrics of the reconstructions
        lines.append(f"rFID {r['rfid']:.2f} ({r['images']} held-out images vs their reconstructions)"
                     + (f", Inception Score of the reconstructions {r['inception_score']:.2f}"
                        if "inception_score" in r else "")
                     + (f", precision {r['precision']:.3f}, recall {r['recall']:.3f}" if "precision" in r else ""))
    if "by_tokens" in r:
        one = "one_step_psnr" in r["by_tokens"][0]
        lines.append(f"{'tokens':>6} {'bits':>7} {'PSNR':>7} {'SSIM':>6} | "
                     + (f"{'1-step PSNR':>11} {'SSIM':>6} | " if one else "") + f"{'baseline PSNR':>13} {'SSIM':>6}")
        for row in r["by_tokens"]:
            lines.append(f"{row['tokens']:>6} {row['bits']:>7.0f} {row['psnr']:>7.2f} {row['ssim']:>6.3f} | "
                         + (f"{row['one_step_psnr']:>11.2f} {row['one_step_ssim']:>6.3f} | " if one else "")
                         + f"{row['baseline_psnr']:>13.2f} {row['baseline_ssim']:>6.3f}")
        lines.append(f"prefixes (original, then 1, 2, 4, ..., K tokens): {r['prefix_grid']}")
    whole = (r.get("grid_scales") or []).count("whole")
    cols = f"; the first {whole} columns whole photographs, then crops" if whole else ""
    lines.append(f"grid (originals / reconstructions / baseline{cols}): {r['grid']}\nreport: {out / 'eval.json'}")
    return "\n".join(lines)
