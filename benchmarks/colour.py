"""Colour that generalises: the image tokenizers on their held-out views at every hue (rotated 0, 60, ..., 300
degrees) and in every channel order, beside the equal-bit baseline, with mean-colour and hue errors
(`gentok.evaluation.colour`), overall and per held-out source.

    python -m benchmarks.colour --titok outputs/titok/model --flextok outputs/flextok/model --binary outputs/binary/model

Evaluates trained models (the recipes' OUTPUT_DIR/model); it trains nothing; a model flag that is not given or points
at no model is skipped. Writes benchmarks/results/colour.json and colour.png (for each model: rows = hue rotations,
columns = original / reconstruction pairs of a few held-out views) and prints one table per model.
"""

from __future__ import annotations

from pathlib import Path

import torch

import gentok
from benchmarks.common import parser, pyplot, save_figure, write_json
from gentok.data.images import default_image_data
from gentok.evaluation.colour import evaluate_colour, summary

SIZE = 64


def _load(name: str, path: str | None):
    if not path or not (Path(path) / "config.json").is_file():
        print(f"skipping {name}: no model at {path!r} (train it with its recipe first)")
        return None
    return gentok.load(path).eval()


def _strip(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "_tensors"}


def _picture(shown: dict[str, dict], path: Path, n_views: int) -> Path:
    plt = pyplot()
    names = list(shown)
    rotations = list(next(iter(shown.values())))
    fig, axes = plt.subplots(len(rotations), 2 * n_views * len(names),
                             figsize=(1.1 * 2 * n_views * len(names), 1.15 * len(rotations)), squeeze=False)
    for m, name in enumerate(names):
        for r, deg in enumerate(rotations):
            x, recon = shown[name][deg]
            for v in range(n_views):
                for j, (img, label) in enumerate(((x[v], "original"), (recon[v], name))):
                    ax = axes[r, (m * n_views + v) * 2 + j]
                    ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
                    ax.set_xticks([]), ax.set_yticks([])
                    if r == 0:
                        ax.set_title(label, fontsize=7)
                    if m == v == j == 0:
                        ax.set_ylabel(f"hue +{deg}", fontsize=8)
    fig.suptitle("held-out views at every hue: original | reconstruction", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, "colour.json")
    p.add_argument("--titok", default="outputs/titok/model")
    p.add_argument("--flextok", default="outputs/flextok/model")
    p.add_argument("--binary", default="outputs/binary/model")
    p.add_argument("--views", type=int, default=64, help="held-out views (default %(default)s)")
    p.add_argument("--show", type=int, default=2, help="views per model in the picture")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    _, held = default_image_data(SIZE, eval_length=args.views)
    images = torch.stack([held[i] for i in range(len(held))])
    sources = sorted(set(held.sources))
    out, shown = {"views": len(images), "sources": {s: held.sources.count(s) for s in sources}, "models": {}}, {}
    for name in ("titok", "flextok", "binary"):
        model = _load(name, getattr(args, name))
        if model is None:
            continue
        report = evaluate_colour(model, images)
        per_source = {}
        for src in sources:
            idx = [i for i, s in enumerate(held.sources) if s == src]
            per_source[src] = _strip(evaluate_colour(model, images[idx], permutations=()))
        out["models"][name] = {"path": str(Path(getattr(args, name)).resolve()), **_strip(report),
                               "by_source": per_source,
                               "beats_baseline_every_rotation": all(r["beats_baseline"] for r in report["rotations"])}
        print(summary(report, name))
        for src, rep in per_source.items():
            worst = min(rep["rotations"], key=lambda r: r["psnr"] - r["baseline_psnr"])
            print(f"  {src}: worst rotation {worst['degrees']} deg: {worst['psnr']:.2f} vs baseline "
                  f"{worst['baseline_psnr']:.2f} dB")
        shown[name] = {deg: (x[:args.show], r[:args.show]) for deg, (x, r) in report["_tensors"].items()}
    if not out["models"]:
        raise SystemExit("no model to evaluate: train one with its recipe first (see --help)")
    path = write_json(args.out, out)
    out_png = _picture(shown, Path(args.out).with_suffix(".png"), args.show)
    print(f"wrote {path} and {out_png}")


if __name__ == "__main__":
    main()
