"""Official checkpoints of other projects (TiTok, FlexTok, transformers' audio codecs) turned into gentok models.

A converter is a module declared as an entry point in the `gentok.converters` group (pyproject.toml) with two
functions: `detect(directory: Path, config: dict) -> bool` (cheap: it reads the project's own `config.json`, imports
nothing heavy) and `convert(directory: Path, config: dict, map_location) -> model`, which returns an ordinary gentok
model (encode/decode, `save_pretrained` into our format, fine-tuning with our loop). Weights are read from
safetensors only; pickled checkpoints (`.bin`, `.pt`, `.ckpt`) are refused, since loading them can execute code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from gentok.checkpoint import CONFIG_NAME, CheckpointError

ENTRY_POINT_GROUP = "gentok.converters"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _converters() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def safetensors_files(directory: Path) -> list[Path]:
    """The safetensors weights of a snapshot; a clear error when there are only pickles (or nothing)."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(f"{directory} holds only pickled weights ({', '.join(pickles)}); gentok never loads "
                                  "pickles (loading them can run code): use the checkpoint's .safetensors files")
        raise CheckpointError(f"{directory} has no .safetensors weights")
    return files


def load_state(directory: Path, map_location="cpu") -> dict[str, torch.Tensor]:
    """All tensors of a snapshot's safetensors files, merged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state = {}
    for f in safetensors_files(directory):
        try:
            state.update(load_file(str(f), device=str(map_location)))
        except (SafetensorError, OSError, RuntimeError) as e:
            raise CheckpointError(f"{f} is corrupt or truncated: {e}") from None
    return state


def check_keys(state: dict, expected: set[str], what: str) -> None:
    """Raise `CheckpointError` (a ValueError) listing missing and unexpected keys when `state` is not `expected`."""
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(f"the weights do not match the {what} layout: missing {missing[:8]}"
                              f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                              f"{' ...' if len(unexpected) > 8 else ''}")


def convert(directory: str | os.PathLike, map_location="cpu"):
    """The gentok model of an official snapshot directory, by the first converter whose `detect` accepts it."""
    import importlib

    directory = Path(directory)
    try:
        config = json.loads((directory / CONFIG_NAME).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{directory / CONFIG_NAME} is not valid JSON ({e})") from None
    for name, module in sorted(_converters().items()):
        mod = importlib.import_module(module)
        if mod.detect(directory, config):
            return mod.convert(directory, config, map_location)
    raise CheckpointError(f"{directory / CONFIG_NAME} is not a gentok config (needs 'type', 'format_version' and "
                          f"'config') and no converter recognises it (known: {sorted(_converters())})")
