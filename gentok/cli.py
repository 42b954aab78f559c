"""`gentok` command line: encode assets to tokens, decode tokens to assets, describe a checkpoint.

    gentok encode --model DIR FILE... --out tokens.safetensors [--option steps=8]
    gentok encode --engine ray|spark|local --model DIR FOLDER_OR_FILE... --out tokens/   # Parquet rows, resumable
    gentok decode --model DIR tokens.safetensors --out DIR
    gentok info DIR

The CLI is modality-blind: each tokenizer reads and writes its own files (`encode_files` / `decode_to_files`), and
the token file is the same `Tokens` file for every family (`gentok/tokenizers/tokens.py`); a VAE tokenizer's file
holds its continuous `Latents` in that format instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from gentok.checkpoint import CheckpointError, is_gentok_checkpoint, read_config
from gentok.hub import load


def _options(pairs: list[str]) -> dict:
    """`key=value` pairs -> keyword arguments; values are parsed as JSON when they parse (8, 1.5, true), else text."""
    out = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--option expects key=value with a Python identifier as key, got {pair!r}")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def _encode(args) -> int:
    from tqdm.auto import tqdm

    from gentok.tokenizers.tokens import Tokens

    if args.engine:
        return _encode_on_engine(args)
    tok = load(args.model)
    options = _options(args.option)
    missing = [p for p in args.inputs if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"input files not found: {', '.join(missing)}")
    parts = []
    starts = range(0, len(args.inputs), args.batch_size)
    for start in tqdm(starts, desc="encode", unit="batch", disable=len(starts) < 2):
        parts.append(tok.encode_files(args.inputs[start:start + args.batch_size], **options))
    tokens = type(parts[0]).cat(parts)  # Tokens, or Latents for a VAE tokenizer
    names = [Path(p).name for p in args.inputs]
    tokens.save(args.out, {"model_type": tok.model_type, "names": names, "model": str(Path(args.model).resolve())})
    if isinstance(tokens, Tokens):
        print(f"encoded {len(names)} file(s) -> {args.out}: ids {tuple(tokens.ids.shape)}, {_bits(tok, tokens)}")
    else:
        print(f"encoded {len(names)} file(s) -> {args.out}: continuous latents {tuple(tokens.values.shape)}")
    return 0


def _encode_on_engine(args) -> int:
    """`--engine`: a Parquet directory written by Ray, Spark or this process (gentok/engines/batch_encode.py)."""
    from gentok.engines import encode_to_parquet

    s = encode_to_parquet(args.model, args.inputs, args.out, engine=args.engine, batch_size=args.batch_size,
                          options=_options(args.option), concurrency=args.concurrency,
                          gpus_per_worker=args.gpus_per_worker)
    print(f"encoded {s['files']} file(s) on {args.engine} -> {args.out}: {s['encoded']} batch(es) written, "
          f"{s['skipped']} already there, {s['seconds']:.1f}s")
    return 0


def _bits(tok, tokens) -> str:
    """The bit counts of a batch, each named by its unit (the tokenizer's family adds its own units)."""
    return tok.bits_summary(tokens)


def _decode(args) -> int:
    from tqdm.auto import tqdm

    from gentok.tokenizers.tokens import read_token_file

    tok = load(args.model)
    options = _options(args.option)
    tokens, header = read_token_file(args.tokens)  # Tokens, or Latents for a VAE tokenizer
    if header.get("model_type") and header["model_type"] != tok.model_type:
        raise ValueError(f"{args.tokens} was encoded by a {header['model_type']!r} model, not {tok.model_type!r}")
    n = len(tokens)
    names = header.get("names") or [f"{i:05d}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{args.tokens}: {len(names)} names for {n} token rows; the file is corrupt")
    written = []
    starts = range(0, n, args.batch_size)
    for start in tqdm(starts, desc="decode", unit="batch", disable=len(starts) < 2):
        stop = start + args.batch_size
        written += tok.decode_to_files(tokens[start:stop], args.out, names[start:stop], **options)
    print(f"decoded {len(written)} file(s) -> {args.out}")
    for w in written:
        print(f"  {w}")
    return 0


def _info(args) -> int:
    from gentok.config import to_dict

    tok = load(args.model)
    if is_gentok_checkpoint(args.model):
        meta = read_config(args.model)
        print(f"type: {meta['type']}  (format_version {meta['format_version']})")
    else:  # an official checkpoint of another project (a snapshot or hub id), converted on load
        meta = {"config": to_dict(tok.config)}
        print(f"type: {tok.model_type}  (converted from an official checkpoint)")
    n_params = sum(p.numel() for p in tok.parameters())
    print(f"parameters: {n_params / 1e6:.2f} M")
    for attr in ("vocab_size", "num_codebooks", "bits_per_token", "tokens_per_item"):
        value = getattr(tok, attr, None)
        if value is not None:
            print(f"{attr}: {value:g}" if isinstance(value, float) else f"{attr}: {value}")
        elif attr == "vocab_size" and hasattr(tok, attr):
            print("vocab_size: none (continuous tokens: encode gives Latents)")
    print(json.dumps(meta["config"], indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gentok", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("encode", help="files -> tokens.safetensors")
    e.add_argument("--model", required=True, help="a gentok model directory (config.json + model.safetensors)")
    e.add_argument("inputs", nargs="+", help="asset files: images, WAV/FLAC audio or FASTA (.gz too); with --engine "
                                               "also folders (their files, recursively, in sorted order)")
    e.add_argument("--out", required=True, help="the token file to write (safetensors); with --engine a directory "
                                                "of Parquet files")
    e.add_argument("--batch-size", type=int, default=16, help="files encoded together")
    e.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a keyword option of the tokenizer's encode (e.g. n_quantizers=4, tokens_per_window=4); "
                        "repeatable")
    e.add_argument("--engine", default=None, choices=["local", "ray", "spark"],
                   help="write Parquet rows (source, index, ids, shape, length) on this engine; reruns skip batches "
                        "already written")
    e.add_argument("--concurrency", type=int, default=None, help="with --engine ray: actors (default: one per CPU)")
    e.add_argument("--gpus-per-worker", type=float, default=0, help="with --engine ray: GPUs per actor")
    e.set_defaults(fn=_encode)
    d = sub.add_parser("decode", help="tokens.safetensors -> files")
    d.add_argument("--model", required=True, help="the model directory that encoded the tokens")
    d.add_argument("tokens", help="a token file written by `gentok encode`")
    d.add_argument("--out", required=True, help="directory for the decoded files")
    d.add_argument("--batch-size", type=int, default=16, help="items decoded together")
    d.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a keyword option of the tokenizer's decode (e.g. FlexTok steps=8 guidance=1.5); repeatable")
    d.set_defaults(fn=_decode)
    i = sub.add_parser("info", help="describe a checkpoint")
    i.add_argument("model", help="a gentok model directory")
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
