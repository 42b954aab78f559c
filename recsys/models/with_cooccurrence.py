"""A trained recommender with an item co-occurrence expert beside it:

    score(u, i) = (1 - share) * z_u(model)_i + share * z_u(co-occurrence)_i

`z_u` standardizes a user's scores over the catalog (`recsys.blend.standardize`), so one share means the same for any
model; the co-occurrence scores are item-kNN over sequences (`recsys.models.cooccurrence`), with similarities built
from the interactions known when the model trained (the training sequences; `update` rebuilds them as interactions
arrive). `fit_cooccurrence` chooses the co-occurrence config and then the share on validation cases only.

Why: on MovieLens the items a user rates within a few steps of each other carry much of the next-item signal, and a
model-free item-kNN estimates it for rare items better than an embedding trained on 100k interactions (on the demo
split co-occurrence alone is above our SASRec; docs/recsys.md). The expert is a score source beside the model, not
part of it: the same wrapper goes around SASRec, RecGPT on SASRec or SETRec, so a comparison of the models with the
expert is a comparison on equal terms (`benchmarks/recsys/recipe_run.py`).

The similarities are saved with the model (three tensors of the nonzero entries) and follow catalog changes:
`keep_items` keeps the kept items' rows and columns, `add_items` (when the model adds items from text) adds items that
co-occur with nothing until `update` sees interactions with them; their co-occurrence score is 0 (the catalog mean of
a user with no signal, as z-scores go).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from gentok.checkpoint import PretrainedMixin, model_class, register
from gentok.config import config, replace
from recsys.blend import SHARES, calibrate_share, mix_scores, model_scores
from recsys.models.base import Recommender
from recsys.models.cooccurrence import Cooccurrence, CooccurrenceConfig, calibrate_cooccurrence

# validation cases `fit_cooccurrence` calibrates on at most: 5,000 users' scores of a 25k-item catalog in float64
# are 1 GB, and the demo split (671) and MovieLens-1M (6,040) stay close to whole
MAX_CASES = 5000


@config
class WithCooccurrenceConfig:
    model_type: str = ""  # the wrapped model's registered type
    model: Any = None  # its config
    window: int = 10  # the co-occurrence config (recsys.models.cooccurrence.CooccurrenceConfig)
    decay: float = 0.7
    alpha: float = 0.7
    share: float = 0.5  # weight of the co-occurrence z-scores, chosen on validation by `fit_cooccurrence`
    pairs: int = 0  # nonzero similarity entries stored

    def __post_init__(self):
        CooccurrenceConfig(self.window, self.decay, self.alpha)  # its checks
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(f"share must lie in [0, 1], got {self.share!r}")
        if self.pairs < 0:
            raise ValueError(f"pairs must be >= 0, got {self.pairs}")

    @property
    def cooccurrence(self) -> CooccurrenceConfig:
        return CooccurrenceConfig(self.window, self.decay, self.alpha)


@register("recsys.with_cooccurrence")
class WithCooccurrence(PretrainedMixin, Recommender, nn.Module):
    """A recommender and an item co-occurrence expert; see the module docstring. Build it with `on`."""

    config_class = WithCooccurrenceConfig

    def __init__(self, config: WithCooccurrenceConfig):
        super().__init__()
        if not config.model_type or config.model is None:
            raise ValueError("WithCooccurrenceConfig needs the wrapped model's type and config: build it with "
                             "WithCooccurrence.on(model, histories)")
        inner = model_class(config.model_type)
        if inner is type(self):
            raise ValueError("a WithCooccurrence cannot wrap another WithCooccurrence")
        self._config = config
        self.model = inner(config.model)
        # the similarity matrix's nonzero entries (`Cooccurrence.sim`, coordinate form)
        self.register_buffer("sim_rows", torch.zeros(config.pairs, dtype=torch.int32))
        self.register_buffer("sim_cols", torch.zeros(config.pairs, dtype=torch.int32))
        self.register_buffer("sim_values", torch.zeros(config.pairs, dtype=torch.float32))
        self._cooc = None

    @classmethod
    def upgrade_config(cls, config: dict) -> tuple[type, dict]:
        """Import the wrapped model's module first (the registry is lazy), so its config class is known when the
        nested config is read."""
        if isinstance(config, dict) and isinstance(config.get("model_type"), str) and config["model_type"]:
            model_class(config["model_type"])  # unknown types raise here with the registry's message
        return cls, config

    @classmethod
    def on(cls, model, histories: Sequence, cooccurrence: CooccurrenceConfig | None = None,
           share: float = 0.5) -> WithCooccurrence:
        """`model` (a trained, registered recommender; kept, not copied) with co-occurrence similarities built from
        `histories` (sequences of item indices, e.g. `split.train_sequences()`)."""
        if isinstance(model, WithCooccurrence) or not getattr(model, "model_type", None):
            raise TypeError(f"WithCooccurrence.on needs a registered recommender, got {type(model).__name__}")
        c = cooccurrence if cooccurrence is not None else CooccurrenceConfig()
        wrapped = cls(WithCooccurrenceConfig(model_type=model.model_type, model=model.config, window=c.window,
                                             decay=c.decay, alpha=c.alpha, share=share))
        wrapped.model = model
        wrapped.update(histories)
        return wrapped.train(model.training)  # a new module starts in training mode; keep the model's

    # -- the co-occurrence expert ---------------------------------------------------------------------------------
    def update(self, histories: Sequence) -> None:
        """Rebuild the similarities from `histories` (the interactions known now; item indices of this catalog)."""
        self._set_sim(Cooccurrence(histories, self.num_items, self.config.cooccurrence).sim)

    def _set_sim(self, sim: sp.spmatrix) -> None:
        coo = sp.coo_matrix(sim)
        dev = self.sim_values.device
        self.sim_rows = torch.from_numpy(coo.row.astype(np.int32)).to(dev)
        self.sim_cols = torch.from_numpy(coo.col.astype(np.int32)).to(dev)
        self.sim_values = torch.from_numpy(coo.data.astype(np.float32)).to(dev)
        self._config = replace(self._config, pairs=int(coo.nnz))
        self._cooc = None

    def cooccurrence(self) -> Cooccurrence:
        """The co-occurrence scorer over the stored similarities (rebuilt after loading or a catalog change)."""
        if self._cooc is None:
            n = self.num_items
            rows, cols = self.sim_rows.cpu().numpy(), self.sim_cols.cpu().numpy()
            values = self.sim_values.cpu().numpy()
            if len(rows) and (min(rows.min(), cols.min()) < 0 or max(rows.max(), cols.max()) >= n
                              or not np.isfinite(values).all() or values.min() < 0):
                raise ValueError(f"the stored co-occurrence similarities are corrupt: entries outside the catalog of "
                                 f"{n} items, negative or not finite")
            self._cooc = Cooccurrence.from_similarities(sp.csr_matrix((values, (rows, cols)), shape=(n, n)),
                                                        self.config.cooccurrence)
        return self._cooc

    def set_share(self, share: float) -> None:
        self._config = replace(self._config, share=float(share))

    @property
    def config(self) -> WithCooccurrenceConfig:
        """The config, with the wrapped model's config as it is now (catalog changes change it)."""
        return replace(self._config, model=self.model.config)

    # -- the Recommender contract ---------------------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        return self.model.num_items

    @property
    def text_dim(self) -> int | None:
        return self.model.text_dim

    def part_scores(self, histories: Sequence) -> tuple[Tensor, Tensor]:
        """(model, co-occurrence) scores of every catalog item, each (b, N) float32 on the CPU."""
        self.check_histories(histories)
        return self.model.score_all(histories).float().cpu(), self.cooccurrence().score_all(histories)

    @torch.no_grad()
    def score_all(self, histories: Sequence) -> Tensor:
        """(b, N) float32 `(1 - share) * z(model) + share * z(co-occurrence)`."""
        return mix_scores(*self.part_scores(histories), self.config.share).float()

    def add_items(self, text: Tensor) -> Tensor:
        idx = self.model.add_items(text)
        self._cooc = None  # the new items co-occur with nothing yet
        return idx

    def keep_items(self, rows: Tensor) -> None:
        rows = self.check_rows(rows)
        sim = self.cooccurrence().sim
        self.model.keep_items(rows)
        keep = rows.cpu().numpy()
        self._set_sim(sim[keep][:, keep])


def fit_cooccurrence(model, split, train_histories: Sequence | None = None, grid: Sequence[float] = SHARES,
                     search: dict | None = None, max_cases: int = MAX_CASES,
                     seed: int = 0) -> tuple[WithCooccurrence, dict]:
    """`model` with a co-occurrence expert, both choices made on the split's **validation** cases (the test cases are
    never requested): the co-occurrence config by its own validation NDCG@10 (`calibrate_cooccurrence`; `search`
    narrows its grid: {"windows", "decays", "alphas"}), then the share of `grid` with the best validation NDCG@10 of
    the mix (`recsys.blend.calibrate_share`). The calibrations hold every case's scores of the whole catalog at once,
    so at most `max_cases` validation cases are used (a seeded random subset beyond that). The similarities come from
    `train_histories` (default the training sequences). Returns (the wrapped model, a report of both choices and their
    validation curves)."""
    _, hists, targets = split.cases("valid")
    if not len(targets):
        raise ValueError("the split has no validation cases to choose the co-occurrence expert on")
    if max_cases < 1:
        raise ValueError(f"max_cases must be >= 1, got {max_cases}")
    if len(targets) > max_cases:
        pick = np.sort(np.random.default_rng(seed).choice(len(targets), size=max_cases, replace=False))
        hists, targets = [hists[i] for i in pick], targets[pick]
    cooc_config, cooc_curve = calibrate_cooccurrence(hists, targets, split.num_items, **(search or {}))
    wrapped = WithCooccurrence.on(model, split.train_sequences() if train_histories is None else train_histories,
                                  cooc_config)
    scores = model_scores(model, hists)
    share, share_curve = calibrate_share(scores, wrapped.cooccurrence().score_all(hists), hists, targets, grid)
    wrapped.set_share(share)
    return wrapped, {"share": share, "cooccurrence": asdict(cooc_config), "share_curve_valid": share_curve,
                     "cooccurrence_curve_valid": cooc_curve, "valid_cases": len(targets)}
