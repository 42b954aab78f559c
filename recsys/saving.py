"""A recommender's model directory: `save_pretrained` (config.json + model.safetensors) plus `items.json`, its catalog
(`recsys.catalog.Catalog`: original ids, their kind, text fingerprints, the text encoder), so scoring speaks original
ids and other data is matched to the model's items by identity.

Loading finds the class through gentok's one registry (`gentok.checkpoint.model_class` imports only the module that
registered the checkpoint's type, so scoring workers start fast), and reads `items.json` once.
"""

from __future__ import annotations

from pathlib import Path

from gentok import checkpoint
from recsys.catalog import ITEMS_FILE, Catalog, with_catalog
from recsys.data import RecData
from recsys.models.base import Recommender


def save_recommender(model, directory: str | Path, data: RecData | Catalog, text_encoder: str | None = None) -> Path:
    """`model.save_pretrained(directory)` plus `items.json`: the catalog of `data` (or `data` itself when it is a
    `Catalog`), recording `text_encoder`, the text encoder the item text was embedded with (None: the default)."""
    directory = Path(directory)
    catalog = data if isinstance(data, Catalog) else Catalog.from_data(data, _portable(text_encoder))
    if len(catalog.ids) != model.num_items:
        raise ValueError(f"the catalog lists {len(catalog.ids)} items but the model has {model.num_items}")
    model.save_pretrained(directory)
    catalog.save(directory)
    return directory


def _portable(text_encoder: str | None) -> str | None:
    """A local encoder directory as an absolute path: the model directory may be used from another cwd."""
    if text_encoder is not None and Path(text_encoder).is_dir():
        return str(Path(text_encoder).resolve())
    return text_encoder


def load_model_dir(directory: str | Path) -> tuple[Recommender, Catalog]:
    """(model, its `Catalog`) of a model directory, each file read once; `CheckpointError` for a directory that
    holds another kind of gentok model, or a catalog that does not fit the model."""
    directory = Path(directory)
    kind = checkpoint.read_config(directory)["type"]
    cls = checkpoint.model_class(kind)
    if not issubclass(cls, Recommender):
        raise checkpoint.CheckpointError(f"{directory} holds a {kind!r} model ({cls.__name__}), not a recommender")
    model = cls.from_pretrained(directory)
    catalog = Catalog.load(directory)
    if len(catalog.ids) != model.num_items:
        raise checkpoint.CheckpointError(f"{directory / ITEMS_FILE} lists {len(catalog.ids)} items but the model "
                                         f"has {model.num_items}")
    return model, catalog


def load_recommender(directory: str | Path):
    """(model, item_ids, id_kind) from a directory written by `save_recommender`; a checkpoint of any other kind of
    model raises `CheckpointError` (a `ValueError`)."""
    model, catalog = load_model_dir(directory)
    return model, catalog.ids, catalog.id_kind


def load_catalog(directory: str | Path) -> Catalog:
    """The catalog (`recsys.catalog.Catalog`) of a model directory written by `save_recommender`."""
    return Catalog.load(directory)


def open_recommender(directory: str | Path, catalog: str | Path | RecData | None = None,
                     text_encoder: str | None = None, progress: bool = False) -> tuple[Recommender, Catalog]:
    """(model, `Catalog`) of a model directory; with `catalog` (a path `recsys.data.load_items` reads, or its
    result) the model ranks exactly that catalog's items, those it does not know added from their text
    (`recsys.catalog.with_catalog`; `text_encoder` overrides the one the model directory records)."""
    model, own = load_model_dir(directory)
    if catalog is None:
        return model, own
    return with_catalog(model, own, catalog, text_encoder=text_encoder, progress=progress)
