"""gentok's checkpoint format (`config.json` + `model.safetensors`) and the one registry of model types.

Nothing here unpickles: the config is JSON rebuilt into registered dataclasses (`gentok.config`), weights are
safetensors. Writes are atomic (temp file + `os.replace`) and `config.json` is written last, so a directory with a
config always has the weights it names.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from gentok.config import from_dict, to_dict
from gentok.files import atomic_write_bytes, atomic_write_json, safetensors_bytes

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

_MODELS: dict[str, type] = {}

# The one registry of model types. A package declares its types as entry points in this group, one per type,
# `"<type>" = "<module that registers it>"` (in its pyproject.toml), so `load` imports only the module a checkpoint
# needs and gentok never names the packages built on top of it.
ENTRY_POINT_GROUP = "gentok.models"


class CheckpointError(ValueError):
    """A checkpoint directory is missing, truncated, corrupt, or of another model type."""


def register(type_name: str):
    """Class decorator: make a model loadable by `gentok.load` under `type_name` (declare the module as an entry
    point in the `gentok.models` group too, so `load` can find it without importing everything)."""

    def wrap(cls):
        if type_name in _MODELS and _MODELS[type_name] is not cls:
            raise TypeError(f"model type {type_name!r} registered twice ({_MODELS[type_name].__name__}, {cls.__name__})")
        _MODELS[type_name] = cls
        cls.model_type = type_name
        return cls

    return wrap


def declared_types() -> dict[str, str]:
    """type -> module, from every installed package's `gentok.models` entry points."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def model_class(type_name: str) -> type:
    """The class registered under `type_name`, importing only the module that registers it."""
    if type_name not in _MODELS:
        module = declared_types().get(type_name)
        if module is None:
            raise CheckpointError(f"unknown model type {type_name!r}; known types: {sorted(declared_types())} "
                                  f"(a package declares its types as '{ENTRY_POINT_GROUP}' entry points)")
        importlib.import_module(module)
        if type_name not in _MODELS:
            raise CheckpointError(f"module {module} is declared for model type {type_name!r} but does not register it")
    return _MODELS[type_name]


def loaded_models() -> dict[str, type]:
    """type -> class of the types registered so far (imports nothing; `registered_models` imports every one)."""
    return dict(_MODELS)


def registered_models() -> dict[str, type]:
    """Every declared model type and its class (imports every declared module)."""
    return {name: model_class(name) for name in sorted(declared_types())}


def state_dict_for_save(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (tied weights): give every repeat its own copy
    seen: set[int] = set()
    out = {}
    for k, v in module.state_dict().items():
        t = v.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen:
            t = t.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[k] = t
    return out


class PretrainedMixin:
    """`save_pretrained` / `from_pretrained` for an `nn.Module` built as `Model(config)`.

    Subclasses set `config_class` and are decorated with `@register("type")`.
    """

    config_class: type = None
    model_type: str = None

    @classmethod
    def upgrade_config(cls, config: dict) -> tuple[type, dict]:
        """The class to build and the config dict it reads, for a `config` saved under this class's type.

        A class whose type once covered a model that now has a class of its own overrides this, so directories
        written by an older gentok keep loading (identity by default)."""
        return cls, config

    def save_pretrained(self, directory: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write `model.safetensors` then `config.json` (with `type` and `format_version`) into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = state_dict_for_save(self)
        metadata = {"type": self.model_type, "format_version": str(FORMAT_VERSION)}
        atomic_write_bytes(directory / WEIGHTS_NAME, safetensors_bytes(tensors, metadata))
        meta = {"type": self.model_type, "format_version": FORMAT_VERSION, "config": to_dict(self.config)}
        if extra:
            meta["extra"] = extra
        atomic_write_json(directory / CONFIG_NAME, meta)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu"):
        """Load a model saved by `save_pretrained`; raises `CheckpointError` for a missing/foreign/corrupt one."""
        meta = read_config(directory)
        if cls.model_type is not None and meta["type"] != cls.model_type:
            raise CheckpointError(
                f"{directory} holds a {meta['type']!r} checkpoint, not a {cls.model_type!r} one; use gentok.load()"
            )
        return build_and_load(cls, meta, directory, map_location)


def read_config(directory: str | os.PathLike) -> dict:
    """Read and check `config.json` of a checkpoint directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    cfg_path = directory / CONFIG_NAME
    if not cfg_path.is_file():
        raise CheckpointError(f"{directory} has no {CONFIG_NAME}: not a gentok checkpoint (or an unfinished save)")
    try:
        meta = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e}); the checkpoint is corrupt or truncated") from None
    if not isinstance(meta, dict) or "type" not in meta or "format_version" not in meta or "config" not in meta:
        raise CheckpointError(f"{cfg_path} is not a gentok config (needs 'type', 'format_version' and 'config')")
    if meta["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path} has format_version {meta['format_version']}, this gentok reads {FORMAT_VERSION}"
        )
    return meta


def build_and_load(cls, meta: dict, directory, map_location):
    directory = Path(directory)
    try:
        cls, config = cls.upgrade_config(meta["config"])
        config = from_dict(config, expected=cls.config_class)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{directory}: config does not describe a {cls.__name__}: {e}") from None
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{directory} has no {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{weights} is corrupt or truncated: {e}") from None
    model = cls(config)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(f"{weights} does not match {cls.__name__}({type(config).__name__}): {e}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not match {cls.__name__}({type(config).__name__}): "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    model.eval()
    return model


def is_gentok_checkpoint(directory: str | os.PathLike) -> bool:
    """True when `directory/config.json` is a gentok config (has `type`, `format_version` and `config`)."""
    try:
        meta = json.loads((Path(directory) / CONFIG_NAME).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(meta, dict) and {"type", "format_version", "config"} <= set(meta)
