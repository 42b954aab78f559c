"""Speed of converted official TiTok models beside the official code (bytedance/1d-tokenizer), same weights, one process.

Builds each requested variant at its published size (random weights) with the official code, saves it as a hub
snapshot would be (`config.json` + `model.safetensors`), converts it with `gentok.load`, checks both give the same
ids, and times encode and decode of 256x256 images on the CPU, interleaved: images/s and the gentok/official ratio
(> 1: gentok is faster). Needs a checkout of the official code and the packages its model code imports (omegaconf,
einops, accelerate, huggingface_hub); without one it says so and exits.

    python -m benchmarks.official --official /path/to/1d-tokenizer [--variants s128 bl64_vq8k --batch 4]
"""

from __future__ import annotations

import json
import sys
import tempfile
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


def main(argv=None):
    p = parser(__doc__, out="official_titok.json")
    p.add_argument("--official", type=Path, help="a checkout of bytedance/1d-tokenizer")
    p.add_argument("--variants", nargs="+", default=["s128", "bl64_vq8k"], choices=sorted(CONFIGS))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.official is None or not (args.official / "modeling" / "titok.py").is_file():
        print("benchmarks.official: skipped, needs --official pointing at a checkout of bytedance/1d-tokenizer "
              "(git clone https://github.com/bytedance/1d-tokenizer) and its model packages "
              "(pip install omegaconf einops accelerate huggingface_hub)")
        return None
    sys.path.insert(0, str(args.official.resolve()))
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
        rows.append({"variant": variant, "ids_agree": bool(torch.equal(ids, ref_ids)),
                     "encode_img_s": args.batch / t["gentok_encode"],
                     "official_encode_img_s": args.batch / t["official_encode"],
                     "encode_ratio": t["official_encode"] / t["gentok_encode"],
                     "decode_img_s": args.batch / t["gentok_decode"],
                     "official_decode_img_s": args.batch / t["official_decode"],
                     "decode_ratio": t["official_decode"] / t["gentok_decode"]})
        del official, ours
    print_table(rows, list(rows[0]), title=f"TiTok, 256x256, batch {args.batch}, CPU threads "
                                           f"{machine()['threads']} (ratio > 1: gentok faster)")
    path = write_json(args.out, {"batch": args.batch, "rows": rows})
    print(f"-> {path}")
    return rows


if __name__ == "__main__":
    main()
