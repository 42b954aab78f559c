"""Training recommenders: next-item windows over each user's training sequence, `fit` with validation-based
selection of the weights, the frozen item tokenizer of RecGPT, and the SASRec whose item table carries collaborative
signal (SETRec's CF tokens, RecGPT's collaborative item codes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from gentok import checkpoint
from gentok.config import replace
from gentok.training import TrainConfig, fit
from recsys.data import DataError, RecData, Split
from recsys.evaluation import SelectOnValidation, report


class NextItemWindows(Dataset):
    """Windows of `max_len + 1` items, left-padded with -1, cut from the end of each training sequence with stride
    `max_len`, so every training interaction is a prediction target exactly once per epoch."""

    def __init__(self, split: Split, max_len: int):
        self.max_len = max_len
        windows = []
        for seq in split.train_sequences():
            end = len(seq)
            while end >= 2:
                start = max(0, end - max_len - 1)
                w = np.full(max_len + 1, -1, dtype=np.int64)
                w[max_len + 1 - (end - start):] = seq[start:end]
                windows.append(w)
                end -= max_len
        if not windows:
            raise DataError("no user has two training interactions: nothing to learn from")
        self.windows = torch.from_numpy(np.stack(windows))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.windows[i]


class _Rows(Dataset):
    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def warm_items(split: Split) -> torch.Tensor:
    """(N,) bool: items with at least one training interaction (the items a CF model such as SASRec learned)."""
    warm = torch.zeros(split.num_items, dtype=torch.bool)
    for seq in split.train_sequences():
        warm[torch.as_tensor(seq, dtype=torch.long)] = True
    return warm


def train_item_tokenizer(emb: torch.Tensor, cfg, output_dir: str | Path, steps: int = 300, seed: int = 0,
                         batch_size: int = 256, progress: bool = True, cf: torch.Tensor | None = None,
                         has_cf: torch.Tensor | None = None):
    """Train the item tokenizer `cfg` describes (FSQ chunk codes or RQ-VAE semantic ids, `recsys.semantic_ids`) with
    `fit` (or load it when `output_dir/model` holds one), then freeze its table.

    With collaborative codes (`cfg.cf_dim > 0`) pass the items' CF vectors `cf` (N, cf_dim), e.g. a trained SASRec's
    item embeddings, and `has_cf` (N,) bool, the items that have interactions (`warm_items`; default all): the text ->
    CF map is fit on those items, and the others (cold items) get codes from their text alone."""
    from recsys.semantic_ids import item_tokenizer_class

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
        tok = item_tokenizer_class(cfg).from_pretrained(out / "model")
        if tok.num_items == len(emb) and tok.config.cf_dim == cfg.cf_dim:
            return tok
    tok = item_tokenizer_class(cfg)(cfg)
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


def save_and_report(result, data: RecData, split: Split, output_dir: str | Path, name: str,
                    text_encoder: str | None = None, extra: dict | None = None) -> dict | None:
    """How a recommender recipe ends, on the main process: the validation-selected `result.model` saved to
    `output_dir/model` (what `recsys score` / `recsys evaluate` take) and its validation and test metrics reported
    into `output_dir/metrics.json` (`recsys.evaluation.report`, with `extra`), which is returned; None elsewhere."""
    from recsys.saving import save_recommender

    if not result.is_main_process:
        return None
    save_recommender(result.model, Path(output_dir) / "model", data, text_encoder=text_encoder)
    return report(result.model, split, output_dir, name, extra=extra)


# how recipes train the SASRec whose item table supplies collaborative signal (SETRec's CF part, RecGPT's
# collaborative item codes) when no trained one is given: the SASRec recipe's schedule (recipes/sasrec.py TRAIN), so
# the generative models build on a SASRec as strong as the baseline they are compared with
SASREC_CF_TRAIN = TrainConfig(max_steps=800, batch_size=32, lr=2e-3, warmup_steps=30, min_lr_ratio=0.1,
                              weight_decay=0.01, eval_every=100, checkpoint_every=100, log_every=10, clip_grad=1.0)


def cf_source(data: RecData, split: Split, sasrec_dir: str | None, output_dir: str | Path, steps: int, seed: int = 0,
              progress: bool = True):
    """The SASRec whose item embeddings carry the collaborative signal: loaded from `sasrec_dir` (it must be trained
    on this data's catalog), else trained here for `steps` steps into `output_dir` (validation-selected)."""
    from recsys.models.sasrec import PRESETS as SASREC_PRESETS
    from recsys.models.sasrec import SASRec
    from recsys.saving import load_recommender

    if sasrec_dir:
        model, ids, _ = load_recommender(sasrec_dir)
        if not isinstance(model, SASRec) or ids != list(data.item_ids):
            raise DataError(f"{sasrec_dir} must be a SASRec model trained on this data's catalog")
        return model
    cfg = replace(SASREC_PRESETS["small"], num_items=data.num_items)
    tcfg = replace(SASREC_CF_TRAIN, output_dir=str(output_dir), seed=seed, max_steps=steps, progress=progress)
    return train_recommender(SASRec(cfg), split, tcfg, cfg.max_len, eval_users=None)[0].model


def with_cooccurrence(result, split: Split) -> dict:
    """Put an item co-occurrence expert beside the trained `result.model` (`recsys.models.with_cooccurrence`, chosen
    on validation; main process only): `result.model` becomes the wrapped model. Returns what the recipe reports:
    the model alone (validation and test, with CIs) and the choices with their validation curves."""
    from recsys.evaluation import evaluate
    from recsys.models.with_cooccurrence import fit_cooccurrence

    model = result.model.cpu().eval()
    alone = {w: evaluate(model, split, w, n_boot=1000)["summary"] for w in ("valid", "test")}
    result.model, chosen = fit_cooccurrence(model, split)
    c = chosen["cooccurrence"]
    print(f"co-occurrence expert: window {c['window']}, decay {c['decay']}, alpha {c['alpha']}, share "
          f"{chosen['share']} (validation NDCG@10 {dict(chosen['share_curve_valid'])[chosen['share']]:.4f}; the model "
          f"alone {alone['valid']['ndcg@10']['mean']:.4f})")
    return {"without_cooccurrence": alone, "cooccurrence": chosen}
