"""Official checkpoints of other projects (TiTok, FlexTok, transformers' audio codecs) turned into gentok models.

A converter is a module declared as an entry point in the `gentok.converters` group (pyproject.toml) with two
functions: `detect(directory: Path, config: dict) -> bool` (cheap: it reads the project's own `config.json`, imports
nothing heavy) and `convert(directory: Path, config: dict, map_location) -> model`, which returns an ordinary gentok
model (encode/decode, `save_pretrained` into our format, fine-tuning with our loop). Weights are read from
safetensors only; pickled checkpoints (`.bin`, `.pt`, `.ckpt`) are refused, since loading them can execute code.

Some projects publish single weight files without a config (RAR's `rar_xl.bin`). A converter that reads those also
offers `detect_weights(names: set[str]) -> bool` and `convert_weights(state, map_location, **options)`, and
`convert_file` picks it by the tensor names. A published `.bin` state dict is the one pickle gentok reads, and only
through `torch.load(weights_only=True)`, whose unpickler builds tensors and plain containers and refuses anything
else (nothing in the file executes); what comes out must be a flat name -> tensor dict.
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


def load_converted(model: torch.nn.Module, ours: dict[str, torch.Tensor], what: str) -> torch.nn.Module:
    """`model` with the converted tensors `ours` (gentok names) loaded strictly; a model built on the meta device
    (no random init of weights replaced at once) takes them as they are. A `CheckpointError` names the tensors whose
    names or shapes differ from the model's; `what` says what the model's shapes were read from."""
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(ours)), sorted(set(ours) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{what}: the converted weights miss {missing[:6]} and have no place for "
                              f"{unexpected[:6]}")
    wrong = [f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in ours.items()
             if v.shape != expected[k].shape]
    if wrong:
        raise CheckpointError(f"{what}: the weights do not match the shapes of the model (gentok name: weights vs "
                              f"model): {wrong[:6]}")
    on_meta = any(t.is_meta for t in expected.values())
    model.load_state_dict({k: v.contiguous() for k, v in ours.items()}, strict=True, assign=on_meta)
    return model


WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin")


def read_weights_file(path: Path, map_location="cpu") -> dict[str, torch.Tensor]:
    """The tensors of one published weights file: safetensors, or a `.bin` state dict read with
    `torch.load(weights_only=True)` (see the module docstring). Anything else is refused."""
    import pickle

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device=str(map_location))
        except (SafetensorError, OSError, RuntimeError) as e:
            raise CheckpointError(f"{path} is corrupt or truncated: {e}") from None
    if path.suffix != ".bin":
        raise CheckpointError(f"{path}: gentok reads weights from .safetensors files, or a published .bin state "
                              f"dict; not {path.suffix or 'a file without a suffix'}")
    try:
        state = torch.load(str(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused an object that is not a tensor or plain container
        first = str(e).strip().splitlines()[0] if str(e).strip() else "refused"
        raise CheckpointError(f"{path} holds more than a state dict of tensors, so gentok will not load it "
                              f"(torch.load weights_only refused it: {first})") from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable PyTorch state dict (corrupt or truncated?): {e}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path} is not a flat state dict (name -> tensor), got {type(state).__name__}")
    return state


def _call(fn, name: str, *args, **options):
    """`fn(*args, **options)`, or a clear error when the converter takes no such option."""
    import inspect

    unknown = sorted(set(options) - set(inspect.signature(fn).parameters))
    if unknown:
        raise CheckpointError(f"the {name} converter takes no option(s) {unknown}")
    return fn(*args, **options)


def convert_file(path: str | os.PathLike, map_location="cpu", **options):
    """The gentok model of one published weights file, by the converter whose `detect_weights` accepts its names."""
    import importlib

    path = Path(path)
    state = read_weights_file(path, map_location)
    for name, module in sorted(_converters().items()):
        mod = importlib.import_module(module)
        if hasattr(mod, "detect_weights") and mod.detect_weights(set(state)):
            return _call(mod.convert_weights, name, state, map_location, **options)
    raise CheckpointError(f"{path}: no converter recognises these weights (first names: {sorted(state)[:5]}); "
                          f"known converters: {sorted(_converters())}")


def weight_files(directory: Path) -> list[Path]:
    """The published weight files lying directly in a folder that has no config.json."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in WEIGHT_FILE_SUFFIXES)


def convert(directory: str | os.PathLike, map_location="cpu", **options):
    """The gentok model of an official snapshot directory, by the first converter whose `detect` accepts it;
    `options` (e.g. `heads=`) go to that converter's `convert`."""
    import importlib

    directory = Path(directory)
    try:
        config = json.loads((directory / CONFIG_NAME).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{directory / CONFIG_NAME} is not valid JSON ({e})") from None
    for name, module in sorted(_converters().items()):
        mod = importlib.import_module(module)
        if hasattr(mod, "detect") and mod.detect(directory, config):  # converters of bare files have none
            return _call(mod.convert, name, directory, config, map_location, **options)
    raise CheckpointError(f"{directory / CONFIG_NAME} is not a gentok config (needs 'type', 'format_version' and "
                          f"'config') and no converter recognises it (known: {sorted(_converters())})")
