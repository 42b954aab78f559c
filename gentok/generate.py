"""Class-conditional image generation: a generator samples token ids, a tokenizer decodes them into files.

`generate_images(generator, tokenizer, classes, num, out_dir)` is the call behind `gentok generate`: it checks that
the pair fits together (same vocabulary, as many tokens as the tokenizer decodes, a tokenizer that decodes ids into
files), samples `num` images per class in batches with a progress bar, lets the tokenizer write them (PNGs for image
tokenizers) and writes `generation.json`: the settings, the seed, the forward passes (NFE) per image and the time.

The sampler follows the generator's `decoding` kind: RAR-style guided autoregressive sampling
(`gentok.sampling.guided`) for "autoregressive" generators with a "no class" id, plain cached AR sampling for ours
without one, MaskGIT parallel decoding (`gentok.sampling.maskgit`) for "masked" ones. Sampler settings are keyword
arguments of that sampler (`guidance_scale`, `temperature`, `steps`, ...); an unknown one is a `ValueError`.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from gentok.config import to_dict
from gentok.files import atomic_write_json

RECORD_NAME = "generation.json"


def _sampler(generator):
    """(name, function, fixed keyword arguments) of the sampler that drives `generator`."""
    kind = getattr(generator, "decoding", "autoregressive")
    if kind == "masked":
        from gentok.sampling.maskgit import maskgit_generate

        return "maskgit", maskgit_generate, {}
    if kind != "autoregressive":
        raise ValueError(f"no sampler for generators that decode {kind!r}")
    if hasattr(generator, "null_class"):
        from gentok.sampling.guided import guided_generate

        return "guided_ar", guided_generate, {}
    from gentok.sampling.basic import generate

    return "ar", generate, {"num_tokens": generator.seq_len}


def check_pair(generator, tokenizer, classes: Sequence[int]) -> list[int]:
    """The class ids as ints, or a `ValueError` naming what does not fit."""
    decode = getattr(tokenizer, "decode_to_files", None)
    if not callable(decode) or not callable(getattr(tokenizer, "decode", None)):
        raise ValueError(f"the tokenizer ({type(tokenizer).__name__}) has no decoder that writes files: pass a "
                         f"tokenizer checkpoint (e.g. a converted TiTok or MaskGIT-VQGAN), not a generator or quantizer")
    vocab = getattr(tokenizer, "vocab_size", None)
    if vocab is None:
        raise ValueError(f"the tokenizer ({type(tokenizer).__name__}) has continuous tokens (a VAE): no token ids "
                         f"for a generator to sample")
    if vocab != generator.vocab_size:
        raise ValueError(f"mismatched vocabularies: the generator samples {generator.vocab_size} codes, the tokenizer "
                         f"decodes {vocab}; use the tokenizer the generator was trained on")
    length = getattr(tokenizer, "tokens_per_item", None)
    if length is not None and length != generator.seq_len:
        raise ValueError(f"mismatched token counts: the generator samples {generator.seq_len} tokens per image, the "
                         f"tokenizer decodes {length}")
    num_classes = getattr(generator, "num_classes", None) or getattr(getattr(generator, "config", None),
                                                                      "num_classes", 0)
    if not num_classes:
        raise ValueError(f"the generator ({type(generator).__name__}) is not class-conditional: it takes no classes")
    ids = [int(c) for c in classes]
    bad = [c for c in ids if not 0 <= c < num_classes]
    if not ids or bad:
        raise ValueError(f"class ids must lie in [0, {num_classes}) for this generator, got "
                         f"{bad if bad else 'none'}")
    return ids


def generate_images(generator, tokenizer, classes: Sequence[int], num: int, out_dir: str | os.PathLike,
                    seed: int = 0, batch_size: int = 8, progress: bool = True, **settings) -> dict:
    """Sample `num` images per class id and write them into `out_dir`, plus `generation.json`.

    Args:
        generator: a class-conditional gentok generator (RAR, a TiTok MaskGIT generator, a conditional AR model).
        tokenizer: the tokenizer whose ids it samples (its `decode_to_files` writes the images).
        classes: class ids, each in [0, generator's num_classes).
        num: images per class (files are named `<index>_class<id>`).
        seed: seeds one random stream that runs through all batches (same seed + settings -> same images).
        batch_size: images sampled per batch.
        settings: keyword arguments of the sampler (see the module docstring).
    Returns:
        the record written to `out_dir/generation.json`.
    """
    classes = check_pair(generator, tokenizer, classes)
    if num < 1 or batch_size < 1:
        raise ValueError(f"num and batch_size must be >= 1, got {num}, {batch_size}")
    name, sample, fixed = _sampler(generator)
    accepted = set(inspect.signature(sample).parameters) - {"model", "cond", "seed", "generator", "chooser",
                                                              "prompt_ids", "batch_size"}
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} for the {name} sampler; it takes {sorted(accepted - set(fixed))}")
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = next(generator.parameters()).device
    stream = torch.Generator(device=device).manual_seed(seed)
    rows = [c for c in classes for _ in range(num)]
    names = [f"{i:05d}_class{c}" for i, c in enumerate(rows)]
    files, nfe, t_sample, t_decode = [], [], 0.0, 0.0
    starts = range(0, len(rows), batch_size)
    generator.eval()
    for start in tqdm(starts, desc="generate", unit="batch", disable=not progress):
        cond = torch.tensor(rows[start:start + batch_size], device=device)
        t0 = time.perf_counter()
        per_batch = {"batch_size": len(cond)} if name == "ar" else {}  # plain AR sizes its batch from this
        out = sample(generator, cond=cond, generator=stream, **fixed, **per_batch, **settings)
        t1 = time.perf_counter()
        with torch.no_grad():
            files += tokenizer.decode_to_files(out.ids, out_dir, names[start:start + batch_size])
        t_sample, t_decode = t_sample + t1 - t0, t_decode + time.perf_counter() - t1
        nfe += out.nfe.tolist()
    record = {"generator": {"type": generator.model_type, "config": to_dict(generator.config)},
              "tokenizer": {"type": getattr(tokenizer, "model_type", type(tokenizer).__name__)},
              "sampler": name, "settings": settings, "seed": seed, "batch_size": batch_size, "classes": classes,
              "num_per_class": num, "images": len(rows), "nfe_per_image": sum(nfe) / len(nfe),
              "seconds": {"sampling": t_sample, "decoding": t_decode, "per_image": (t_sample + t_decode) / len(rows)},
              "files": [Path(f).name for f in files]}
    atomic_write_json(out_dir / RECORD_NAME, record)
    return record
