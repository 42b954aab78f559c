"""`gentok.load`: the front door that turns a name into a model.

It takes a gentok `save_pretrained` directory (format and registry: `gentok.checkpoint`), a local snapshot of an
official checkpoint of another project (converted by `gentok.pretrained`), or a hub id the user names explicitly
(fetched by `gentok.pretrained.remote`, the one module that may reach the network).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from gentok.checkpoint import (
    CONFIG_NAME,
    CheckpointError,
    build_and_load,
    is_gentok_checkpoint,
    model_class,
    read_config,
)


def load(source: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """Load a model: a gentok `save_pretrained` directory, a local snapshot of an official checkpoint of another
    project (converted into a gentok model, see `gentok.pretrained.convert`), or a hub id such as
    `yucornetto/tokenizer_titok_l32_imagenet`, fetched through huggingface_hub's cache only because it was named.

    A gentok directory's class is chosen by the config's `type`; only the module that registers it is imported."""
    directory = Path(source)
    if not directory.exists():
        from gentok.pretrained.remote import is_hub_id, snapshot

        if not is_hub_id(str(source)):
            raise CheckpointError(f"checkpoint directory {directory} does not exist")
        try:
            directory = snapshot(str(source))
        except CheckpointError as e:  # a mistyped local path looks like a hub id too: say both
            raise CheckpointError(f"no local directory {source!r}, and as a hub id: {e}") from None
    if directory.is_dir() and (directory / CONFIG_NAME).is_file() and not is_gentok_checkpoint(directory):
        from gentok.pretrained.convert import convert

        return convert(directory, map_location)
    meta = read_config(directory)
    try:
        cls = model_class(meta["type"])
    except CheckpointError as e:
        raise CheckpointError(f"{directory}: {e}") from None
    return build_and_load(cls, meta, directory, map_location)
