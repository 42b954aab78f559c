"""Item identity across catalogs: an item is the same item only when its id *and* its text agree.

Ids number items per dataset ("42" in one catalog is not "42" in another), so matching data to a model by id alone
scores the wrong items and reports the result as if it meant something. A model directory's `items.json` therefore
lists the model's catalog as `Catalog`: the original ids, their kind, a fingerprint of each item's text
(`text_fingerprint`) and the text encoder the model embedded item text with. Data evaluated against the model is
matched by identity (`Catalog.match`): an id that the model uses for an item with other text raises
`CatalogMismatch` naming examples. Model directories written before fingerprints existed are matched by id with a
warning.

`with_catalog` makes a text-based model (RecGPT, SETRec) recommend on another catalog without retraining: the
catalog's items that the model knows (same id and text) keep what the model learned about them, the others are
added from their text (`model.add_items`), and the model's catalog becomes exactly the new one (`model.keep_items`),
so it ranks, and returns ids of, the new catalog's items only. Id-based models (SASRec) can rank a subset of their
own catalog but cannot add items.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gentok.checkpoint import CheckpointError
from gentok.files import atomic_write_json
from recsys.data import DataError, RecData, load_items

ITEMS_FILE = "items.json"
EXAMPLES = 3  # mismatching items named in an error message


class CatalogMismatch(DataError):
    """Data names items by ids that the model's catalog uses for other items (their text differs)."""


class CatalogWarning(UserWarning):
    """Items were matched by id alone because there was no text to confirm that they are the same items."""


def text_fingerprint(text: str) -> str:
    """A short hash of an item's text (whitespace runs collapsed), "" for an item without text."""
    norm = " ".join(str(text).split())
    return hashlib.sha256(norm.encode()).hexdigest()[:16] if norm else ""


def _short(text: str, n: int = 60) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


@dataclass
class Catalog:
    """The items a model ranks: original ids (index = internal item index), their kind, text fingerprints (None
    for model directories written before they were stored) and the text encoder (None: the default one)."""

    ids: list[str]
    fingerprints: list[str] | None = None
    id_kind: str = "str"
    text_encoder: str | None = None
    source: str = "the model"  # how messages name this catalog

    def __post_init__(self):
        if self.fingerprints is not None and len(self.fingerprints) != len(self.ids):
            raise ValueError(f"{len(self.ids)} item ids but {len(self.fingerprints)} text fingerprints")

    @classmethod
    def of(cls, ids: Sequence[str], texts: Sequence[str], id_kind: str = "str", text_encoder: str | None = None,
           source: str = "the model") -> Catalog:
        return cls([str(i) for i in ids], [text_fingerprint(t) for t in texts], id_kind, text_encoder, source)

    @classmethod
    def from_data(cls, data: RecData, text_encoder: str | None = None) -> Catalog:
        return cls.of(data.item_ids, data.item_text, data.id_kind, text_encoder)

    # -- items.json ------------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write `items.json` (the keys `item_ids` and `id_kind` are what older readers expect)."""
        path = Path(directory) / ITEMS_FILE
        atomic_write_json(path, {"item_ids": self.ids, "id_kind": self.id_kind,
                                 "item_text_fingerprints": self.fingerprints, "text_encoder": self.text_encoder})
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Catalog:
        path = Path(directory) / ITEMS_FILE
        if not path.is_file():
            raise CheckpointError(f"{directory} has no {ITEMS_FILE}: not a recsys model directory (use recsys recipes)")
        meta = json.loads(path.read_text())
        return cls([str(i) for i in meta["item_ids"]], meta.get("item_text_fingerprints"), meta.get("id_kind", "str"),
                   meta.get("text_encoder"), source=f"the model {directory}")

    # -- identity --------------------------------------------------------------------------------------------------
    def lookup(self, ids: Sequence[str]) -> np.ndarray:
        """(n,) int64: the index of each id in this catalog, -1 where absent (ids only, no identity check)."""
        where = {s: i for i, s in enumerate(self.ids)}
        return np.fromiter((where.get(str(s), -1) for s in ids), dtype=np.int64, count=len(ids))

    def identify(self, ids: Sequence[str], texts: Sequence[str], source: str) -> tuple[np.ndarray, np.ndarray]:
        """(index, differs): the index of each (id, text) in this catalog by id (-1 where absent), and where an id is
        present but the text says it is another item. Without stored fingerprints every present id is taken as the
        same item (with a `CatalogWarning`); an item without text on either side is matched by its id, with a
        warning when this catalog has text for it."""
        idx = self.lookup(ids)
        known = idx >= 0
        if self.fingerprints is None:
            if known.any():
                warnings.warn(f"{self.source} stores no item text fingerprints (written before they existed): the "
                              f"items of {source} are matched by id alone, which is only right when its ids number "
                              f"the same items", CatalogWarning, stacklevel=3)
            return idx, np.zeros(len(idx), dtype=bool)
        mine = np.asarray(self.fingerprints + [""], dtype=object)[idx]  # idx -1 reads the "" sentinel
        theirs = np.asarray([text_fingerprint(t) for t in texts], dtype=object)
        differs = known & (mine != "") & (theirs != "") & (mine != theirs)
        unchecked = int((known & (mine != "") & (theirs == "")).sum())
        if unchecked:
            warnings.warn(f"{unchecked} items of {source} have no text: they are matched to {self.source}'s items "
                          f"by id alone", CatalogWarning, stacklevel=3)
        return idx, differs

    def match(self, ids: Sequence[str], texts: Sequence[str], source: str = "the data") -> np.ndarray:
        """(n,) int64 index of each item (id, text) in this catalog, -1 for items it does not list; raises
        `CatalogMismatch` naming examples when an id is listed but its text says it is another item."""
        idx, differs = self.identify(ids, texts, source)
        if differs.any():
            bad = np.flatnonzero(differs)
            eg = "; ".join(f"id {ids[i]!r} is {_short(texts[i])!r} there" for i in bad[:EXAMPLES])
            raise CatalogMismatch(
                f"{len(bad)} of the {int((idx >= 0).sum())} items of {source} whose ids {self.source} also lists are "
                f"other items (their text differs), e.g. {eg}. Its ids number a different catalog, so matching them "
                f"by id would score the wrong items; to recommend on that catalog with a text-based model (RecGPT, "
                f"SETRec), add its items from their text with --catalog")
        return idx


def remap_to_catalog(data: RecData, catalog: Catalog, source: str = "the data") -> tuple[RecData, int]:
    """`data` with its items renumbered as `catalog`'s (matched by identity, `Catalog.match`) and interactions with
    items the catalog does not list dropped; returns it and the number dropped. `DataError` when none is left."""
    idx = catalog.match(data.item_ids, data.item_text, source)
    items = idx[data.items]
    keep = items >= 0
    if len(items) and not keep.any():
        raise DataError(f"none of the {len(data.item_ids)} items of {source} is in {catalog.source}'s catalog of "
                        f"{len(catalog.ids)} items; to recommend on its catalog with a text-based model, add its "
                        f"items with --catalog")
    out = RecData(data.users[keep], items[keep], data.timestamps[keep], data.user_ids, list(catalog.ids),
                  [""] * len(catalog.ids), catalog.id_kind)
    return out, int((~keep).sum())


def with_catalog(model, catalog: Catalog, items: RecData | str | Path, text_encoder: str | None = None,
                 embed: Callable[[list[str]], torch.Tensor] | None = None, source: str | None = None,
                 progress: bool = False):
    """Make `model` (with catalog `catalog`) rank exactly the items of `items` (ids + text, or a path that
    `recsys.data.load_items` reads), without retraining.

    Items the model knows (same id and text) keep their index; the others are embedded with the model's text
    encoder (`text_encoder` overrides the one `catalog` records; `embed(texts) -> (m, d)` replaces encoding, e.g.
    in tests) and added with `model.add_items`. Changes `model` in place; returns (model, the new `Catalog`).
    Raises `DataError` when an item to add has no text or the model cannot add items (id-based models)."""
    if isinstance(items, (str, Path)):
        source = source or f"the catalog {items}"
        items = load_items(items)
    source = source or "the catalog"
    if not items.item_ids:
        raise DataError(f"{source} lists no items")
    idx, differs = catalog.identify(items.item_ids, items.item_text, source)
    new = np.flatnonzero((idx < 0) | differs)
    if len(new):
        if model.text_dim is None:
            eg = ", ".join(repr(items.item_ids[i]) for i in new[:EXAMPLES])
            raise DataError(f"{len(new)} items of {source} are not in the catalog of this {type(model).__name__} "
                            f"(e.g. {eg}), and it ranks the item ids it was trained on: it cannot add items from "
                            f"their text; use a text-based model (RecGPT, SETRec) for a new catalog")
        texts = [items.item_text[i] for i in new]
        empty = [items.item_ids[i] for i, t in zip(new, texts) if not str(t).strip()]
        if empty:
            raise DataError(f"{len(empty)} new items of {source} have no text to add them from, e.g. "
                            f"{', '.join(map(repr, empty[:EXAMPLES]))}")
        if embed is None:
            from recsys.text import encode_texts

            emb = encode_texts(texts, text_encoder or catalog.text_encoder, progress=progress)
        else:
            emb = embed(texts)
        if emb.ndim != 2 or emb.shape[1] != model.text_dim:
            raise DataError(f"the text encoder gives {tuple(emb.shape)[1:]}-wide embeddings but the model was trained "
                            f"on {model.text_dim}-wide ones: pass the text encoder it was trained with")
        idx = idx.copy()
        idx[new] = model.add_items(emb).numpy()
    model.keep_items(torch.as_tensor(idx))
    out = Catalog.of(items.item_ids, items.item_text, items.id_kind, text_encoder or catalog.text_encoder,
                     source=source)
    return model, out
