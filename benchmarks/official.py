"""Speed of converted official TiTok models beside the official code (bytedance/1d-tokenizer), same weights, one process.

Builds each requested variant at its published size (random weights) with the official code, saves it as a hub
snapshot would be (`config.json` + `model.safetensors`), converts it with `gentok.load`, checks both give the same
ids, and times encode and decode of 256x256 images on the CPU, interleaved: images/s and the gentok/official ratio
(> 1: gentok is faster). With --compile it also times gentok after `TiTok.compile(freeze=True)`, reporting the
one-off compile seconds apart and the compiled outputs' largest difference from eager. Needs a checkout of the
official code and the packages its model code imports (omegaconf, einops, accelerate, huggingface_hub); without one it
says so and exits. torchvision is not needed: the official package imports it only for its training losses, so a
placeholder stands in when it is missing (installing it can replace a CPU torch with a CUDA build).

On a machine shared with other jobs, run with --threads 1 as well: there every multi-threaded op pays for waking a
thread that may be descheduled, which favours code issuing fewer, larger ops, whatever their cost alone.

    python -m benchmarks.official --official /path/to/1d-tokenizer [--variants s128 bl64_vq8k --batch 4]
        [--threads 1] [--compile]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

from benchmarks.common import interleaved, machine, parser, print_table, write_json

CONFIGS = {"l32": "titok_l32", "b64": "titok_b64", "s128": "titok_s128", "bl64_vq8k": "titok_bl64_vq8k",
           "bl128_vq8k": "titok_bl128_vq8k", "sl256_vq8k": "titok_sl256_vq8k"}


def _snapshot(checkout: Path, variant: str, directory: Path):
    """The official model of `variant` (published size, random weights) and its snapshot written to `directory`."""
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    from modeling.titok import TiTok as OfficialTiTok

    cfg = OmegaConf.to_container(OmegaConf.load(checkout / "configs" / "infer" / "TiTok" / f"{CONFIGS[variant]}.yaml"),
                                 resolve=True)
    cfg["model"].pop("generator", None)
    torch.manual_seed(0)
    model = OfficialTiTok(cfg).eval()
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    return model


def _placeholder_torchvision() -> None:
    """Let the official package import without torchvision: only its training losses (LPIPS / perceptual) use it."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        tv = types.ModuleType("torchvision")
        tv.models = types.ModuleType("torchvision.models")
        sys.modules.update({"torchvision": tv, "torchvision.models": tv.models})


def _compiled_row(ours, official, images, ids, repeats: int) -> dict:
    """Compile `ours` in place, time its first calls apart, then time it interleaved with the official code again."""
    with torch.inference_mode():
        eager_ids, eager_img = ours.encode(images).ids, ours.decode(ids)
        ours.compile(freeze=True)
        t0 = time.perf_counter()
        comp_ids = ours.encode(images).ids
        t1 = time.perf_counter()
        comp_img = ours.decode(ids)
        t2 = time.perf_counter()
        t = interleaved({"compiled_encode": lambda: ours.encode(images),
                         "official_encode": lambda: official.encode(images),
                         "compiled_decode": lambda: ours.decode(ids),
                         "official_decode": lambda: official.decode_tokens(ids).clamp(0, 1)}, repeats=repeats)
    return {"compile_encode_s": t1 - t0, "compile_decode_s": t2 - t1,
            "compiled_ids_agree": bool(torch.equal(comp_ids, eager_ids)),
            "compiled_decode_max_diff": float((comp_img - eager_img).abs().max()),
            "compiled_encode_ratio": t["official_encode"] / t["compiled_encode"],
            "compiled_decode_ratio": t["official_decode"] / t["compiled_decode"]}


def main(argv=None):
    p = parser(__doc__, out="official_titok.json")
    p.add_argument("--official", type=Path, help="a checkout of bytedance/1d-tokenizer")
    p.add_argument("--variants", nargs="+", default=["s128", "bl64_vq8k"], choices=sorted(CONFIGS))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--compile", action="store_true", help="also time gentok compiled (TiTok.compile(freeze=True))")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.official is None or not (args.official / "modeling" / "titok.py").is_file():
        print("benchmarks.official: skipped, needs --official pointing at a checkout of bytedance/1d-tokenizer "
              "(git clone https://github.com/bytedance/1d-tokenizer) and its model packages "
              "(pip install omegaconf einops accelerate huggingface_hub)")
        return None
    sys.path.insert(0, str(args.official.resolve()))
    _placeholder_torchvision()
    import gentok

    images = torch.rand(args.batch, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    rows = []
    for variant in args.variants:
        with tempfile.TemporaryDirectory() as tmp:
            official = _snapshot(args.official.resolve(), variant, Path(tmp) / variant)
            ours = gentok.load(Path(tmp) / variant)
        with torch.inference_mode():
            ids = ours.encode(images).ids
            ref_ids = official.encode(images)[1]["min_encoding_indices"].reshape(len(images), -1)
            t = interleaved({
                "gentok_encode": lambda: ours.encode(images),
                "official_encode": lambda: official.encode(images),
                "gentok_decode": lambda: ours.decode(ids),
                "official_decode": lambda: official.decode_tokens(ids).clamp(0, 1),
            }, repeats=args.repeats)
        # random weights at published size: the official vq8k codebook starts at +-1/8192, so some latents sit at exact
        # distance ties between codes, where the two implementations may round to different winners
        row = {"variant": variant, "ids_agree": bool(torch.equal(ids, ref_ids)),
               "ids_agree_fraction": float((ids == ref_ids).float().mean()),
               "encode_img_s": args.batch / t["gentok_encode"],
               "official_encode_img_s": args.batch / t["official_encode"],
               "encode_ratio": t["official_encode"] / t["gentok_encode"],
               "decode_img_s": args.batch / t["gentok_decode"],
               "official_decode_img_s": args.batch / t["official_decode"],
               "decode_ratio": t["official_decode"] / t["gentok_decode"]}
        if args.compile:  # after the eager timings, which compiling in place would otherwise change
            row.update(_compiled_row(ours, official, images, ids, args.repeats))
        rows.append(row)
        del official, ours
    print_table(rows, list(rows[0]), title=f"TiTok, 256x256, batch {args.batch}, CPU threads "
                                           f"{machine()['threads']} (ratio > 1: gentok faster)")
    path = write_json(args.out, {"batch": args.batch, "compile": args.compile, "rows": rows})
    print(f"-> {path}")
    return rows


if __name__ == "__main__":
    main()
