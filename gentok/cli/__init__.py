"""`gentok` command line: encode assets to tokens, decode tokens to assets, describe a checkpoint.

    gentok encode --model DIR FILE... --out tokens.safetensors [--option KEY=VALUE]
    gentok encode --engine ray|spark|local --model DIR FOLDER_OR_FILE... --out tokens/   # Parquet rows, resumable
    gentok decode --model DIR tokens.safetensors --out DIR
    gentok info DIR
    gentok --version
    gentok generate --generator G --tokenizer T --classes 207,360 --num 8 --out DIR [--option guidance_scale=4]
    gentok fid DIR --ref REF_DIR_OR_NPZ --inception-weights FILE [--save-stats OUT.npz]   # gFID, IS, precision/recall
    gentok fid DIR --tokenizer MODEL --inception-weights FILE                             # rFID of a tokenizer on DIR

The CLI is modality-blind: each tokenizer reads and writes its own files (`encode_files` / `decode_to_files`), and
the token file is the same `Tokens` file for every family (`gentok/tokenizers/tokens.py`); a VAE tokenizer's file
holds its continuous `Latents` in that format instead.

Errors follow the one policy of gentok's entry points (`gentok.cli.errors`): a user mistake is one line on stderr
and exit status 2; `--debug` or `GENTOK_DEBUG=1` shows the traceback.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from pathlib import Path

from gentok.checkpoint import is_gentok_checkpoint, read_config
from gentok.cli.errors import DEBUG_ENV, DEBUG_FLAG, UsageError, call
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


def _option_names(method, positional: int) -> tuple[set[str], bool]:
    """(the keyword options `method` takes after its first `positional` arguments, whether it also takes **kw)."""
    names, more = set(), False
    for i, p in enumerate(inspect.signature(method).parameters.values()):
        if p.kind is p.VAR_KEYWORD:
            more = True
        elif i >= positional and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.add(p.name)
    return names, more


def _check_options(tok, options: dict, command: str) -> None:
    """Refuse option keys the tokenizer's `encode_files` / `decode_to_files` and the `encode` / `decode` they pass
    their other options to do not take, naming the ones they do."""
    files, core, skip = ((tok.encode_files, tok.encode, 1) if command == "encode" else
                         (tok.decode_to_files, tok.decode, 3))
    known, more = _option_names(files, skip)
    if more:
        inner, more = _option_names(core, 1)
        known |= inner
    if more:  # the tokenizer's own method takes any keyword: it checks them itself
        return
    unknown = sorted(set(options) - known)
    if unknown:
        takes = f"its options: {', '.join(sorted(known))}" if known else "it takes no options"
        raise UsageError(f"--option {', '.join(unknown)}: {type(tok).__name__}'s {command} does not take "
                         f"{'this option' if len(unknown) == 1 else 'these options'}; {takes}")


def _check_inputs(paths: list[str]) -> None:
    folders = [p for p in paths if os.path.isdir(p)]
    if folders:
        raise UsageError(f"{folders[0]} is a folder: encode reads files, so pass them (a shell glob such as "
                         f"{os.path.join(folders[0], '*')}) or add --engine local to encode a whole folder into Parquet")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise UsageError(f"input file{'s' if len(missing) > 1 else ''} not found: {', '.join(missing)}")


def _encode(args) -> int:
    from tqdm.auto import tqdm

    from gentok.tokenizers.tokens import Tokens

    if args.engine:
        return _encode_on_engine(args)
    _check_inputs(args.inputs)
    if os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a directory; encode writes one token file: name a file, e.g. "
                         f"--out {os.path.join(args.out, 'tokens.safetensors')} (or add --engine local for Parquet "
                         "files in a directory)")
    tok = load(args.model)
    options = _options(args.option)
    _check_options(tok, options, "encode")
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

    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a file; decode writes one file per item into a directory: name a "
                         "new or existing directory")
    if not os.path.isfile(args.tokens):
        raise UsageError(f"token file {args.tokens} not found (write one with `gentok encode`)")
    tok = load(args.model)
    options = _options(args.option)
    _check_options(tok, options, "decode")
    tokens, header = read_token_file(args.tokens)  # Tokens, or Latents for a VAE tokenizer
    if header.get("model_type") and header["model_type"] not in (tok.model_type, *tok.earlier_types):
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


def _generate(args) -> int:
    from gentok.generate import generate_images

    try:
        classes = [int(c) for c in args.classes.split(",") if c.strip()]
    except ValueError:
        raise ValueError(f"--classes expects comma-separated class ids (e.g. 207,360), got {args.classes!r}") from None
    from gentok.generators.base import check_generator

    generator = check_generator(load(args.generator, filename=args.generator_file), "--generator")
    tokenizer = load(args.tokenizer)
    record = generate_images(generator, tokenizer, classes, args.num, args.out, seed=args.seed,
                             batch_size=args.batch_size, **_options(args.option))
    print(f"generated {record['images']} image(s) -> {args.out} ({record['nfe_per_image']:g} NFE each, "
          f"{record['seconds']['per_image']:.3f} s per image)")
    return 0


def _fid(args) -> int:
    """FID / IS / precision-recall as JSON on stdout (gentok.evaluation.fid); Inception weights are required."""
    import torch

    from gentok.evaluation.fid import fid_of_folders, inception_features, reconstruction_fid

    if args.inception_weights is None and not args.download_inception:
        raise UsageError("gentok fid needs the Inception weights: --inception-weights FILE (torch-fidelity's "
                         "pt_inception-2015-12-05-6726825d.pth) or --download-inception to fetch them")
    if args.tokenizer and args.ref:
        raise UsageError("--tokenizer (rFID: DIR against its reconstructions) and --ref (DIR against REF) exclude "
                         "each other")
    if not os.path.isdir(args.images):
        raise UsageError(f"{args.images} is not a folder of images")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    features = inception_features(args.inception_weights, args.download_inception, device)
    if args.tokenizer:
        result = reconstruction_fid(load(args.tokenizer).to(device), args.images, features, args.batch_size,
                                    args.save_stats)
    else:
        result = fid_of_folders(args.images, features, args.ref, args.image_size, args.batch_size, args.save_stats)
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from gentok import __version__

    p = argparse.ArgumentParser(prog="gentok", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"gentok {__version__}")
    p.add_argument(DEBUG_FLAG, action="store_true",
                   help=f"show the traceback of an error (also: {DEBUG_ENV}=1 in the environment)")
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
    g = sub.add_parser("generate", help="class ids -> generated images (+ generation.json)")
    g.add_argument("--generator", required=True, help="a generator: gentok directory, official snapshot or weights "
                                                      "file (rar_xl.bin), or a hub id")
    g.add_argument("--generator-file", default=None, help="the weights file to take from --generator (a folder or "
                                                          "hub id), e.g. rar_xl.bin")
    g.add_argument("--tokenizer", required=True, help="the tokenizer whose ids the generator samples")
    g.add_argument("--classes", required=True, help="comma-separated class ids, e.g. 207,360")
    g.add_argument("--num", type=int, default=1, help="images per class")
    g.add_argument("--out", required=True, help="directory for the images and generation.json")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch-size", type=int, default=8, help="images sampled together")
    g.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a sampler setting (guidance_scale=4, guidance_scale_pow=2.75, temperature=1.0, steps=8, "
                        "guidance_decay=linear, ...); repeatable")
    g.set_defaults(fn=_generate)
    f = sub.add_parser("fid", help="FID / IS / precision-recall of a folder of images (JSON)")
    f.add_argument("images", metavar="DIR", help="a folder of images (recursively), e.g. the output of `gentok generate`")
    f.add_argument("--ref", default=None, help="what to compare against: a folder of images, or an .npz of reference "
                                               "statistics (mu, sigma), e.g. ADM's VIRTUAL_imagenet256_labeled.npz")
    f.add_argument("--tokenizer", default=None, help="rFID instead: the images against their reconstructions by this "
                                                     "tokenizer (a gentok directory, official snapshot or hub id)")
    f.add_argument("--inception-weights", default=None, metavar="FILE",
                   help="torch-fidelity's Inception weights (pt_inception-2015-12-05-6726825d.pth)")
    f.add_argument("--download-inception", action="store_true", help="download those weights instead")
    f.add_argument("--save-stats", default=None, metavar="OUT.npz",
                   help="write the feature statistics of the images (a reference file for --ref later)")
    f.add_argument("--image-size", type=int, default=256,
                   help="side each image is brought to (shorter side, centre crop) before the network (default 256)")
    f.add_argument("--batch-size", type=int, default=64)
    f.set_defaults(fn=_fid)
    return p


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


def main(argv: list[str] | None = None) -> int:
    """The `gentok` command (console script): run `argv` (default `sys.argv[1:]`) under the one error policy
    (`gentok.cli.errors`) and return the exit status: 0, or 2 after the one line of a user mistake."""
    return call(_run, argv, prog="gentok")


if __name__ == "__main__":
    sys.exit(main())
