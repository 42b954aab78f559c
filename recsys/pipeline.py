"""What the recommender recipes share: load data + split, embed item text, train the item tokenizer, train a model
with validation-based selection, report metrics, save a self-contained model directory (weights + item ids), load it
back through gentok's one model registry, and end a recipe with one line instead of a traceback when the data does
not fit the model (the training data format is described in `recsys.data`)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

from gentok import checkpoint
from gentok.training import TrainConfig, fit
from recsys.catalog import ITEMS_FILE, Catalog
from recsys.data import TEXT_COLUMNS, DataError, RecData, Split, leave_one_out, load_data
from recsys.evaluation import SelectOnValidation, evaluate
from recsys.metrics import format_table
from recsys.models.base import Recommender
from recsys.train import NextItemWindows


class _Rows(Dataset):
    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def prepare(data_path: str | None, seed: int = 0) -> tuple[RecData, Split]:
    data = load_data(data_path)
    split = leave_one_out(data, seed=seed)
    return data, split


def require_item_text(data: RecData, model: str) -> None:
    """Raise `DataError` unless some catalog item has text (RecGPT and SETRec embed it; SASRec needs ids only)."""
    if not any(data.item_text):
        raise DataError(f"the data has no item text, which {model} needs: add a text column "
                        f"({', '.join(TEXT_COLUMNS[:4])}, ...) to the interactions, or give a directory with "
                        f"interactions.* and items.* (or RecBole .inter + .item); id-only data trains SASRec "
                        f"(recipes/sasrec.py)")


def item_embeddings(data: RecData, text_encoder: str | None = None, progress: bool = True,
                    model: str = "a text-based recommender") -> torch.Tensor:
    """Text embeddings (N, d) of every catalog item (cached); `DataError` when the data has no item text."""
    from recsys.text import encode_texts

    require_item_text(data, model)
    return encode_texts(data.item_text, text_encoder, progress=progress)


def warm_items(split: Split) -> torch.Tensor:
    """(N,) bool: items with at least one training interaction (the items a CF model such as SASRec learned)."""
    warm = torch.zeros(split.num_items, dtype=torch.bool)
    for seq in split.train_sequences():
        warm[torch.as_tensor(seq, dtype=torch.long)] = True
    return warm


def train_item_tokenizer(emb: torch.Tensor, cfg, output_dir: str | Path, steps: int = 300, seed: int = 0,
                         batch_size: int = 256, progress: bool = True, cf: torch.Tensor | None = None,
                         has_cf: torch.Tensor | None = None):
    """Train the FSQ item autoencoder with `fit` (or load it when `output_dir/model` exists), then freeze its table.

    With collaborative codes (`cfg.cf_dim > 0`) pass the items' CF vectors `cf` (N, cf_dim), e.g. a trained SASRec's
    item embeddings, and `has_cf` (N,) bool, the items that have interactions (`warm_items`; default all): the text ->
    CF map is fit on those items, and the others (cold items) get codes from their text alone."""
    from recsys.item_tokens import ItemTokenizer

    if cfg.cf_dim:
        if cf is None or cf.ndim != 2 or cf.shape != (len(emb), cfg.cf_dim):
            raise ValueError(f"collaborative item codes (cf_dim={cfg.cf_dim}) need CF vectors ({len(emb)}, "
                             f"{cfg.cf_dim}), got {None if cf is None else tuple(cf.shape)}")
        has_cf = torch.ones(len(emb), dtype=torch.bool) if has_cf is None else torch.as_tensor(has_cf, dtype=torch.bool)
        if not bool(has_cf.any()):
            raise DataError("no item has interactions to take a collaborative signal from")
        cf = cf.detach().float().cpu()
    elif cf is not None:
        raise ValueError("CF vectors were given but the tokenizer config has cf_dim=0 (text-only codes)")
    out = Path(output_dir)
    if (out / "model" / checkpoint.CONFIG_NAME).is_file():
        tok = ItemTokenizer.from_pretrained(out / "model")
        if tok.num_items == len(emb) and tok.config.cf_dim == cfg.cf_dim:
            return tok
    tok = ItemTokenizer(cfg)
    rows = emb.float()
    if cfg.cf_dim:
        tok.fit_cf_map(rows[has_cf], cf[has_cf])
        rows = tok.fuse(rows, cf, has_cf)  # cold items train on their text + predicted CF, as they will be coded
    tcfg = TrainConfig(output_dir=str(out), max_steps=steps, batch_size=min(batch_size, len(emb)), lr=3e-3,
                       warmup_steps=min(20, steps // 5), eval_every=0, checkpoint_every=0, seed=seed,
                       weight_decay=0.0, progress=progress)
    result = fit(tok, _Rows(rows), tcfg)
    tok = result.model
    tok.build_table(emb.float(), cf, has_cf)
    if result.is_main_process:
        tok.save_pretrained(out / "model")
    return tok


def train_recommender(model, split: Split, train_cfg: TrainConfig, max_len: int, run_config: dict | None = None,
                      eval_users: int | None = None):
    """`fit` on next-item windows; keeps the weights with the best validation NDCG@10 (test is never consulted).

    Returns `fit`'s result (its `model` holds the selected weights, in eval mode) and the selector."""
    windows = NextItemWindows(split, max_len)
    if len(windows) < train_cfg.batch_size:
        raise DataError(f"the data gives {len(windows)} training windows, fewer than one batch of "
                        f"{train_cfg.batch_size}: use more data or a smaller --set train.batch_size")
    selector = SelectOnValidation(split, max_users=eval_users)
    result = fit(model, windows, train_cfg, eval_data=windows, eval_fn=selector, run_config=run_config)
    selector.restore(result.model)
    result.model.eval()
    return result, selector


# how recipes train the SASRec whose item table supplies collaborative signal (SETRec's CF tokens, RecGPT's
# collaborative item codes) when no trained one is given
SASREC_CF_TRAIN = TrainConfig(max_steps=300, batch_size=32, lr=2e-3, warmup_steps=30, min_lr_ratio=0.1,
                              weight_decay=0.01, eval_every=100, checkpoint_every=100, log_every=10, clip_grad=1.0)


def cf_source(data: RecData, split: Split, sasrec_dir: str | None, output_dir: str | Path, steps: int, seed: int = 0,
              progress: bool = True):
    """The SASRec whose item embeddings carry the collaborative signal: loaded from `sasrec_dir` (it must be trained
    on this data's catalog), else trained here for `steps` steps into `output_dir` (validation-selected)."""
    from gentok.config import replace
    from recsys.models.sasrec import PRESETS as SASREC_PRESETS
    from recsys.models.sasrec import SASRec

    if sasrec_dir:
        model, ids, _ = load_recommender(sasrec_dir)
        if not isinstance(model, SASRec) or ids != list(data.item_ids):
            raise DataError(f"{sasrec_dir} must be a SASRec model trained on this data's catalog")
        return model
    cfg = replace(SASREC_PRESETS["small"], num_items=data.num_items)
    tcfg = replace(SASREC_CF_TRAIN, output_dir=str(output_dir), seed=seed, max_steps=steps, progress=progress)
    return train_recommender(SASRec(cfg), split, tcfg, cfg.max_len, eval_users=300)[0].model


def save_recommender(model, directory: str | Path, data: RecData | Catalog, text_encoder: str | None = None) -> Path:
    """`save_pretrained` plus `items.json`: the catalog (`recsys.catalog.Catalog`: internal index -> original item
    id, id kind, a fingerprint of each item's text, and `text_encoder`, the text encoder the item text was embedded
    with, None for the default) so scoring speaks original ids and other data is matched to items by identity."""
    directory = Path(directory)
    model.save_pretrained(directory)
    if text_encoder is not None and Path(text_encoder).is_dir():
        text_encoder = str(Path(text_encoder).resolve())  # the model directory may be used from another cwd
    catalog = data if isinstance(data, Catalog) else Catalog.from_data(data, text_encoder)
    if len(catalog.ids) != model.num_items:
        raise ValueError(f"the catalog lists {len(catalog.ids)} items but the model has {model.num_items}")
    catalog.save(directory)
    return directory


def load_recommender(directory: str | Path):
    """(model, item_ids, id_kind) from a directory written by `save_recommender` (its whole catalog, with text
    fingerprints: `load_catalog`).

    The class comes from gentok's registry (`gentok.checkpoint.model_class` imports only the module that registered the
    checkpoint's type, so scoring workers start fast); a checkpoint of any other kind of model raises
    `CheckpointError` (a `ValueError`)."""
    directory = Path(directory)
    kind = checkpoint.read_config(directory)["type"]
    cls = checkpoint.model_class(kind)
    if not issubclass(cls, Recommender):
        raise checkpoint.CheckpointError(f"{directory} holds a {kind!r} model ({cls.__name__}), not a recommender")
    model = cls.from_pretrained(directory)
    catalog = load_catalog(directory)
    if len(catalog.ids) != model.num_items:
        raise checkpoint.CheckpointError(f"{directory / ITEMS_FILE} lists {len(catalog.ids)} items but the model has "
                                  f"{model.num_items}")
    return model, catalog.ids, catalog.id_kind


def load_catalog(directory: str | Path) -> Catalog:
    """The catalog (`recsys.catalog.Catalog`) of a model directory written by `save_recommender`."""
    return Catalog.load(directory)


def open_recommender(directory: str | Path, catalog: str | Path | RecData | None = None,
                     text_encoder: str | None = None, progress: bool = False):
    """(model, `Catalog`) of a model directory; with `catalog` (a path `recsys.data.load_items` reads, or its
    result) the model ranks exactly that catalog's items, those it does not know added from their text
    (`recsys.catalog.with_catalog`; `text_encoder` overrides the one the model directory records)."""
    from recsys.catalog import with_catalog
    from recsys.data import load_items

    model, _, _ = load_recommender(directory)
    cat = load_catalog(directory)
    if catalog is None:
        return model, cat
    items = load_items(catalog) if isinstance(catalog, (str, Path)) else catalog
    source = f"the catalog {catalog}" if isinstance(catalog, (str, Path)) else "the catalog"
    return with_catalog(model, cat, items, text_encoder=text_encoder, source=source, progress=progress)


def report(model, split: Split, output_dir: str | Path, name: str, extra: dict | None = None) -> dict:
    """Validation and test metrics with bootstrap CIs; printed as a table and written to `metrics.json`."""
    valid = evaluate(model, split, "valid", progress=True)
    test = evaluate(model, split, "test", progress=True)
    out = {"model": name, "split": split.summary(), "valid": valid["summary"], "test": test["summary"],
           **(extra or {})}
    atomic_write_json(Path(output_dir) / "metrics.json", out)
    print(format_table({f"{name} valid": valid["summary"], f"{name} test": test["summary"]}))
    print(f"split: {split.summary()}  -> {Path(output_dir) / 'metrics.json'}")
    return out


def data_help(needs_text: bool) -> str:
    """The `--data` help of a recommender recipe."""
    need = ("and item text (text columns in the interactions, or an items file)" if needs_text
            else "(item text is not used)")
    return (f"interactions with user_id, item_id[, timestamp] {need}: a CSV/TSV/Parquet file, a directory with "
            f"interactions.* [+ items.*], or RecBole .inter [+ .item] files (default: the MovieLens demo data)")


def run_recipe(main, argv: list[str], name: str) -> None:
    """Run a recipe's `main(argv)`. When the data does not fit the model (`DataError`) or a given model directory
    is of the wrong kind (`CheckpointError`), print one line `name: error: ...` on stderr and exit with status 2
    (argparse's status for bad arguments): the message is the whole story, a traceback would bury it."""
    try:
        main(argv)
    except (DataError, checkpoint.CheckpointError) as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        sys.exit(2)
