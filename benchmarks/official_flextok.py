"""Speed of converted official FlexTok models beside the official code (apple/ml-flextok), same weights, one process.

Builds a random-weight FlexTok with the official code at 256x256 (the real SD-VAE, 16 latent channels, 2x2 latent
patches, K registers; width and depth smaller than d12-d12 by default so a CPU run takes a minute), converts its
hub snapshot with `gentok.load`, checks the ids agree, and times encode and decode (Euler steps, CFG) of both:
images/s and gentok/official ratios. Needs a checkout of the official code and its dependencies (hydra-core, mup);
without one it says so and exits.

    python -m benchmarks.official_flextok --official /path/to/ml-flextok [--dim 384 --depth 4 --steps 4]
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path

import torch

from benchmarks.common import interleaved, machine, parser, print_table, write_json

TOOLS = Path(__file__).resolve().parents[1] / "tools" / "make_flextok_fixtures.py"


def _fixture_tool():
    spec = importlib.util.spec_from_file_location("make_flextok_fixtures", TOOLS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None):
    p = parser(__doc__, out="official_flextok.json")
    p.add_argument("--official", type=Path, help="a checkout of apple/ml-flextok")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if args.official is None or not (args.official / "flextok" / "flextok_wrapper.py").is_file():
        print("benchmarks.official_flextok: skipped, needs --official /path/to/ml-flextok (a checkout of "
              "apple/ml-flextok with hydra-core and mup installed)")
        return None
    import gentok

    tool = _fixture_tool()
    sizes = dict(DIM=args.dim, HEAD_DIM=64, K=args.tokens, LATENT_CH=16, PATCH=2, GRID=16, DEPTH=args.depth)
    official = tool.build(args.official, tiny_vae=False, **sizes)
    with tempfile.TemporaryDirectory() as tmp:
        official.save_pretrained(tmp)
        (Path(tmp) / "config.json").write_text(json.dumps(tool.flextok_config(**sizes)))
        ours = gentok.load(tmp)
    images = torch.rand(args.batch, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    kw = dict(timesteps=args.steps, guidance_scale=2.5, verbose=False, vae_image_sizes=32)
    with torch.no_grad():  # FlexAttention has no backward on CPU
        ids = torch.cat(official.tokenize(images * 2 - 1))
        same_ids = bool(torch.equal(ours.encode(images).ids, ids))
        enc = interleaved({"official": lambda: official.tokenize(images * 2 - 1),
                           "gentok": lambda: ours.encode(images)}, repeats=args.repeats)
        dec = interleaved({"official": lambda: official.detokenize(list(ids.split(1)), **kw),
                           "gentok": lambda: ours.decode(ids, steps=args.steps, guidance=2.5)}, repeats=args.repeats)
    rows = [{"op": op, "official img/s": args.batch / t["official"], "gentok img/s": args.batch / t["gentok"],
             "speedup": t["official"] / t["gentok"]} for op, t in (("encode", enc), ("decode", dec))]
    print_table(rows, ["op", "official img/s", "gentok img/s", "speedup"],
                title=f"FlexTok 256px, dim {args.dim} x {args.depth} blocks, K={args.tokens}, {args.steps} steps, "
                      f"batch {args.batch}, CPU threads {torch.get_num_threads()} (ids identical: {same_ids})")
    payload = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "ids_identical": same_ids,
               "rows": rows}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
