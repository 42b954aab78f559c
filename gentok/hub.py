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


def load(source: str | os.PathLike, map_location: str | torch.device = "cpu", *, filename: str | None = None,
         **options):
    """Load a model: a gentok `save_pretrained` directory, a local snapshot of an official checkpoint of another
    project (converted into a gentok model, see `gentok.pretrained.convert`), or a hub id such as
    `yucornetto/tokenizer_titok_l32_imagenet`, fetched through huggingface_hub's cache only because it was named.

    Projects that publish bare weight files load from the file (`load("rar_xl.bin")`), from a folder holding one,
    or by naming it: `load("yucornetto/RAR", filename="rar_xl.bin")` (a hub id, or a local folder). `options` go to
    the converter (e.g. `heads=16`: a check of the head count RAR reads from its weights).

    A gentok directory's class is chosen by the config's `type`; only the module that registers it is imported."""
    directory = Path(source)
    if filename is not None or directory.is_file():
        from gentok.pretrained.convert import convert_file

        if filename is None:
            return convert_file(directory, map_location, **options)
        if directory.is_dir():
            return convert_file(directory / filename, map_location, **options)
        from gentok.pretrained.remote import download_file, is_hub_id

        if not is_hub_id(str(source)):
            raise CheckpointError(f"{source}: neither a local folder nor a hub id to take {filename!r} from")
        return convert_file(download_file(str(source), filename), map_location, **options)
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

        return convert(directory, map_location, **options)
    if directory.is_dir() and not (directory / CONFIG_NAME).exists():
        from gentok.pretrained.convert import convert_file, weight_files

        files = weight_files(directory)
        if len(files) == 1:  # a folder holding one published weights file
            return convert_file(files[0], map_location, **options)
        if files:
            raise CheckpointError(f"{directory} holds several weight files ({', '.join(p.name for p in files)}): "
                                  f"name one, e.g. gentok.load({str(source)!r}, filename={files[0].name!r})")
    if options:
        raise CheckpointError(f"{directory} is a gentok checkpoint: options {sorted(options)} apply only to "
                              f"converted official checkpoints")
    meta = read_config(directory)
    try:
        cls = model_class(meta["type"])
    except CheckpointError as e:
        raise CheckpointError(f"{directory}: {e}") from None
    return build_and_load(cls, meta, directory, map_location)
