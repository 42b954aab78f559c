"""`gentok` command line: encode assets to tokens, decode tokens to assets, describe a checkpoint.

    gentok encode --model DIR FILE... --out tokens.safetensors
    gentok decode --model DIR tokens.safetensors --out DIR
    gentok info DIR

The CLI is modality-blind: each tokenizer reads and writes its own files (`encode_files` / `decode_to_files`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from gentok.hub import CheckpointError, atomic_write_bytes, load, read_config


def _encode(args) -> int:
    tok = load(args.model)
    missing = [p for p in args.inputs if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"input files not found: {', '.join(missing)}")
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(args.inputs), args.batch_size):
        chunk = args.inputs[start:start + args.batch_size]
        for k, v in tok.encode_files(chunk).items():
            parts.setdefault(k, []).append(v)
    tensors = {k: _cat_padded(v) for k, v in parts.items()}
    names = [Path(p).name for p in args.inputs]
    meta = {"model_type": tok.model_type, "names": json.dumps(names), "model": str(Path(args.model).resolve())}
    atomic_write_bytes(args.out, save({k: v.contiguous() for k, v in tensors.items()}, metadata=meta))
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items())
    print(f"encoded {len(names)} file(s) -> {args.out} ({shapes}; {tok.bits_per_sample:.0f} bits per sample)")
    return 0


def _cat_padded(chunks: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate batches whose trailing sizes differ (e.g. audio frames), padding with -1 ("no token")."""
    shape = [max(c.shape[d] for c in chunks) for d in range(1, chunks[0].ndim)]
    padded = []
    for c in chunks:
        pad = []
        for d in reversed(range(1, c.ndim)):
            pad += [0, shape[d - 1] - c.shape[d]]
        padded.append(torch.nn.functional.pad(c, pad, value=-1) if any(pad) else c)
    return torch.cat(padded)


def _decode(args) -> int:
    tok = load(args.model)
    try:
        with safe_open(args.tokens, "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"cannot read token file {args.tokens}: {e}") from None
    if meta.get("model_type") and meta["model_type"] != tok.model_type:
        raise ValueError(f"{args.tokens} was encoded by a {meta['model_type']!r} model, not {tok.model_type!r}")
    n = next(iter(tensors.values())).shape[0] if tensors else 0
    names = json.loads(meta["names"]) if "names" in meta else [f"{i:05d}" for i in range(n)]
    written = []
    for start in range(0, n, args.batch_size):
        part = {k: v[start:start + args.batch_size] for k, v in tensors.items()}
        written += tok.decode_to_files(part, args.out, names[start:start + args.batch_size])
    print(f"decoded {len(written)} file(s) -> {args.out}")
    return 0


def _info(args) -> int:
    meta = read_config(args.model)
    tok = load(args.model)
    n_params = sum(p.numel() for p in tok.parameters())
    print(f"type: {meta['type']}  (format_version {meta['format_version']})")
    print(f"parameters: {n_params / 1e6:.2f} M")
    for attr in ("vocab_size", "bits_per_sample"):
        if hasattr(tok, attr):
            print(f"{attr}: {getattr(tok, attr)}")
    print(json.dumps(meta["config"], indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gentok", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("encode", help="files -> tokens.safetensors")
    e.add_argument("--model", required=True)
    e.add_argument("inputs", nargs="+")
    e.add_argument("--out", required=True)
    e.add_argument("--batch-size", type=int, default=16)
    e.set_defaults(fn=_encode)
    d = sub.add_parser("decode", help="tokens.safetensors -> files")
    d.add_argument("--model", required=True)
    d.add_argument("tokens")
    d.add_argument("--out", required=True)
    d.add_argument("--batch-size", type=int, default=16)
    d.set_defaults(fn=_decode)
    i = sub.add_parser("info", help="describe a checkpoint")
    i.add_argument("model")
    i.set_defaults(fn=_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, CheckpointError) as e:
        print(f"gentok {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
