"""Token data for the generator recipe: the training views and held-out images of any dataset form
(`gentok.data.images.default_image_data`) encoded once by an image tokenizer, with their class labels when the form
has them (an ImageFolder tree's class folders, a tar shard's `.cls` members, a label column).

The in-memory forms (the bundled photographs, a plain folder) have no labels and a length: their first `limit` views
go through `gentok.generators.data.pretokenize`. The streamed forms are endless: `pretokenize_stream` reads the first
`limit` views of the training stream (as one process would: reader 0 of 1, its loader workers splitting the shards),
so a bounded number of images is encoded however large the dataset. Both caches are safetensors files with `ids`
(n, L) and, for labelled data, `labels` (n,) (-1: a record without one), remade whenever the tokenizer, the count or
the data tag changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import Tensor
from tqdm.auto import tqdm

from gentok.data.datasets import HeldOutViews
from gentok.data.streams import ImageStream
from gentok.files import atomic_write_bytes
from gentok.generators.data import pretokenize
from gentok.validate import PAD_ID


@dataclass
class GeneratorTokens:
    """Token ids of the training views and held-out images; labels (n,) when the data has class labels (-1 where a
    record has none), else None; `classes` the dataset's class names when it has them."""
    train_ids: Tensor
    eval_ids: Tensor
    train_labels: Tensor | None = None
    eval_labels: Tensor | None = None
    classes: tuple[str, ...] = ()

    @property
    def labelled(self) -> bool:
        """Whether any image carries a class label."""
        return any(t is not None and bool((t >= 0).any()) for t in (self.train_labels, self.eval_labels))

    def num_classes(self) -> int:
        """Classes a conditional generator needs: the dataset's class names, else the largest label seen + 1."""
        seen = max(int(t.max()) for t in (self.train_labels, self.eval_labels) if t is not None and len(t))
        return max(len(self.classes), seen + 1)

    def unlabelled(self) -> int:
        """Images without a label (a partly labelled dataset cannot train a class-conditional generator)."""
        return sum(len(ids) if t is None else int((t < 0).sum())
                   for ids, t in ((self.train_ids, self.train_labels), (self.eval_ids, self.eval_labels)))


def _cached(cache: Path, meta: dict) -> dict[str, Tensor] | None:
    if not cache.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(cache), "pt") as f:
            if f.metadata() == meta:
                return load_file(str(cache))
    except (OSError, RuntimeError, ValueError):
        pass  # an unreadable cache is recomputed
    return None


def _check_ids(ids: Tensor) -> Tensor:
    if ids.ndim != 2:
        raise ValueError(f"generators model flat sequences; this tokenizer returned ids of shape {tuple(ids.shape)}")
    if (ids == PAD_ID).any():
        raise ValueError("generators model fixed-length sequences; this tokenizer returned padded (ragged) tokens")
    return ids


@torch.no_grad()
def pretokenize_stream(tokenizer, stream: ImageStream, cache: str | Path, fingerprint: str, tag: str, limit: int,
                       batch_size: int = 128) -> tuple[Tensor, Tensor | None]:
    """(ids (limit, L), labels (limit,) or None) of the first `limit` training views of `stream`, encoded by
    `tokenizer`; read from `cache` when it was made by the same (fingerprint, limit, tag), else computed (a progress
    bar) and written atomically. Labels come back when the stream was built with `labels=True` and some record has
    one."""
    if limit < 1:
        raise ValueError(f"the number of images to tokenize must be >= 1, got {limit}")
    cache = Path(cache)
    meta = {"fingerprint": fingerprint, "n": str(limit), "tag": f"{tag}:stream"}
    found = _cached(cache, meta)
    if found is not None:
        return found["ids"], found.get("labels")
    tokenizer.eval()
    device = next(tokenizer.parameters()).device
    ids, labels, n = [], [], 0
    bar = tqdm(total=limit, desc=f"tokenize {cache.name}", unit="image")
    batches = iter(stream.loader(min(batch_size, limit)))
    for batch in batches:  # endless: stop after `limit` views
        views, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
        take = min(len(views), limit - n)
        ids.append(tokenizer.encode(views[:take].to(device)).ids.cpu())
        if y is not None:
            labels.append(y[:take].long())
        n += take
        bar.update(take)
        if n >= limit:
            break
    batches.close()  # stops the loader's workers now
    bar.close()
    data = {"ids": _check_ids(torch.cat(ids).long()).contiguous()}
    labels = torch.cat(labels).contiguous() if labels else None
    if labels is not None and bool((labels >= 0).any()):  # records without any label: an unlabelled dataset
        data["labels"] = labels
    atomic_write_bytes(cache, save(data, metadata=meta))
    return data["ids"], data.get("labels")


def held_out_labels(held: HeldOutViews, classes: tuple[str, ...]) -> Tensor | None:
    """Class ids (n,) of a streamed form's held-out images, read back from their sources (`held_out_photos` names
    each by its class name, or its label when the form has no names); None when no image has a label."""
    index = {name: i for i, name in enumerate(classes)}
    out = []
    for source in held.sources:
        if source in index:
            out.append(index[source])
        elif source.lstrip("-").isdigit():
            out.append(int(source))
        else:
            out.append(-1)  # named by its shard: no label
    labels = torch.tensor(out, dtype=torch.long)
    return labels if bool((labels >= 0).any()) else None


def generator_tokens(tokenizer, train, held: HeldOutViews, out_dir: str | Path, fingerprint: str, tag: str,
                     limit: int, batch_size: int = 128) -> GeneratorTokens:
    """The token data of `default_image_data`'s (train, held) pair (module docstring), cached in `out_dir` as
    tokens_train.safetensors / tokens_eval.safetensors. `train` is a map-style dataset or an `ImageStream`."""
    out_dir = Path(out_dir)
    eval_ids = pretokenize(tokenizer, held, out_dir / "tokens_eval.safetensors", fingerprint, tag, batch_size)
    if not isinstance(train, ImageStream):
        train_ids = pretokenize(tokenizer, train, out_dir / "tokens_train.safetensors", fingerprint, tag, batch_size,
                                limit=limit)
        return GeneratorTokens(train_ids, eval_ids)
    train_ids, train_labels = pretokenize_stream(tokenizer, train, out_dir / "tokens_train.safetensors",
                                                 fingerprint, tag, limit, batch_size)
    eval_labels = held_out_labels(held, train.classes) if train_labels is not None else None
    return GeneratorTokens(train_ids, eval_ids, train_labels, eval_labels, tuple(train.classes))
