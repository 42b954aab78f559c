"""Item tokenizer: item text embedding -> a few FSQ codes per item (RecGPT-style), plus a disambiguating suffix.

The embedding (e.g. 384-d MiniLM) is split into `n_chunks` equal chunks; each chunk is projected to the FSQ width and
quantized by the core `FSQ` (one token per chunk); a decoder maps the codes back to the embedding, so the tokenizer is
trained as a small autoencoder. After training, `build_table` freezes the item -> codes table: items whose chunk
codes coincide get suffix 0, 1, 2, ... (in catalog order), so every item has a unique code sequence of length
`n_chunks + 1`. New items are encoded from their embedding alone (`add_items`) without retraining.

**Collaborative codes** (`cf_dim > 0`, semantic IDs from fused text + CF embeddings): every chunk encoder also sees
the item's collaborative (CF) vector, e.g. a trained SASRec's item embedding, L2-normalised and scaled by
`cf_weight`, and the autoencoder reconstructs it too (loss weighted by `cf_weight`), so items that are consumed
together get nearby codes even when their text differs. Items without interactions (cold or new items) have no CF
vector: theirs is predicted from their text by a ridge map fit on the warm items (`fit_cf_map`, saved with the
tokenizer), so they get codes from their text alone, exactly the codes `encode(text)` gives.

`ItemCodes` holds what every item tokenizer shares (the frozen table with its disambiguation suffix, the text -> CF
map, `add_items` / `keep_items` / `table_stats`); `recsys.semantic_ids` builds TIGER's RQ-VAE semantic ids on it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gentok.checkpoint import PretrainedMixin, register
from gentok.config import config, replace
from gentok.quantizers import FSQ, FSQConfig
from gentok.validate import check_ids


@config
class ItemTokenizerConfig:
    embed_dim: int = 384  # width of the text embedding (all-MiniLM-L6-v2)
    n_chunks: int = 3  # tokens per item before the suffix: short ids keep decoding cheap
    levels: tuple[int, ...] = (8, 6, 5)  # FSQ levels per token: 240 codes
    hidden: int = 256  # per-chunk encoder/decoder MLP width
    max_suffix: int = 256  # most items allowed to share the same chunk codes (an under-trained tokenizer collides a lot)
    num_items: int = 0  # rows of the frozen table (set by build_table / add_items)
    cf_dim: int = 0  # width of the collaborative item vectors fused with the text; 0: codes from text alone
    cf_weight: float = 1.0  # scale of the normalised CF vector in the input, and weight of its reconstruction loss

    def __post_init__(self):
        if self.embed_dim < 1 or self.n_chunks < 1 or self.embed_dim % self.n_chunks:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be a positive multiple of n_chunks ({self.n_chunks})")
        if self.max_suffix < 1 or self.hidden < 1 or self.num_items < 0:
            raise ValueError("max_suffix and hidden must be >= 1 and num_items >= 0")
        if self.cf_dim < 0 or not self.cf_weight > 0:
            raise ValueError(f"cf_dim must be >= 0 and cf_weight > 0, got {self.cf_dim}, {self.cf_weight}")
        FSQConfig(dim=len(self.levels), levels=self.levels)  # validates the levels

    @classmethod
    def tiny(cls, embed_dim: int = 24, cf_dim: int = 0):
        return cls(embed_dim=embed_dim, n_chunks=3, levels=(4, 3), hidden=32, max_suffix=16, cf_dim=cf_dim)

    @property
    def input_dim(self) -> int:
        """Width of the vectors the autoencoder trains on (`ItemTokenizer.fuse`): text, then the CF part."""
        return self.embed_dim + self.cf_dim

    @property
    def prefix_length(self) -> int:
        """Tokens per item before the disambiguation suffix."""
        return self.n_chunks


CF_RIDGE = 1.0  # ridge penalty of the text -> CF map (text embeddings are unit vectors; ~9k warm items on the demo)


@dataclass
class ItemTokenizerOutput:
    recon: Tensor  # (b, input_dim)
    codes: Tensor  # (b, prefix_length): chunk codes, or RQ-VAE levels
    loss: Tensor
    metrics: dict = field(default_factory=dict)


def reconstruction_loss(recon: Tensor, x: Tensor, embed_dim: int, cf_weight: float) -> tuple[Tensor, dict]:
    """Autoencoder loss of reconstructions `recon` of fused inputs `x` (b, embed_dim + cf_dim): MSE (per vector) +
    (1 - cosine) on the text part, plus `cf_weight` times the same on the unit CF part (stored scaled by `cf_weight`,
    compared unscaled). Returns the loss and {"cosine"[, "cf_cosine"]}."""
    emb, e = x[:, :embed_dim], embed_dim
    mse = F.mse_loss(recon[:, :e], emb) * emb.shape[1]  # per-vector squared error, comparable to the cosine term
    cos = 1 - F.cosine_similarity(recon[:, :e], emb, dim=-1).mean()
    loss, metrics = mse + cos, {"cosine": 1 - cos.detach()}
    if x.shape[1] > e:
        target, cf_recon = x[:, e:] / cf_weight, recon[:, e:] / cf_weight
        cf_cos = 1 - F.cosine_similarity(cf_recon, target, dim=-1).mean()
        loss = loss + cf_weight * (F.mse_loss(cf_recon, target) * target.shape[1] + cf_cos)
        metrics["cf_cosine"] = 1 - cf_cos.detach()
    return loss, metrics


class ItemCodes(nn.Module, metaclass=abc.ABCMeta):
    """What every item tokenizer shares: the frozen item -> code table `codes` (N, prefix_length + 1), whose last
    column disambiguates items with equal prefixes (TIGER's extra level: 0, 1, 2, ... in catalog order), and, with
    `cf_dim > 0`, the text -> CF ridge map that gives items without interactions their CF part.

    Subclasses set `self.config` (with embed_dim, cf_dim, cf_weight, max_suffix, num_items, input_dim, prefix_length)
    before calling `_init_table()`, and provide `prefix_vocab` and `encode(emb, cf, has_cf) -> (b, prefix_length)`.
    """

    def _init_table(self) -> None:
        c = self.config
        if c.cf_dim:  # text -> CF ridge map (rows: text dims, then the bias), used for items without interactions
            self.register_buffer("cf_map", torch.zeros(c.embed_dim + 1, c.cf_dim))
        self.register_buffer("codes", torch.zeros(c.num_items, c.prefix_length + 1, dtype=torch.long))

    # -- sizes ---------------------------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def prefix_vocab(self) -> list[int]:
        """Vocabulary of each prefix position (before the suffix)."""

    @property
    def code_length(self) -> int:
        return self.config.prefix_length + 1

    @property
    def vocab_sizes(self) -> list[int]:
        """Vocabulary of each position of an item's code sequence (prefix codes, then the suffix)."""
        return list(self.prefix_vocab) + [self.config.max_suffix]

    @property
    def num_items(self) -> int:
        return self.codes.shape[0]

    def _check(self, emb: Tensor, width: int | None = None, what: str = "embeddings") -> None:
        width = self.config.embed_dim if width is None else width
        if not isinstance(emb, Tensor) or not emb.dtype.is_floating_point or emb.ndim != 2 or emb.shape[1] != width:
            raise ValueError(f"expected float {what} (b, {width}), got "
                             f"{getattr(emb, 'dtype', type(emb))} {tuple(getattr(emb, 'shape', ()))}")
        if not torch.isfinite(emb).all():
            raise ValueError(f"item {what} contain NaN or infinite values")

    # -- collaborative signal ----------------------------------------------------------------------------------
    @torch.no_grad()
    def fit_cf_map(self, text: Tensor, cf: Tensor, ridge: float = CF_RIDGE) -> float:
        """Fit the ridge map text (m, embed_dim) -> normalised CF (m, cf_dim) on items *with* interactions; it gives
        items without any their CF part. Returns the mean cosine between predicted and true CF on those items."""
        if not self.config.cf_dim:
            raise ValueError("this item tokenizer has cf_dim=0: it builds codes from text alone")
        self._check(text)
        self._check(cf, self.config.cf_dim, "CF vectors")
        if len(text) != len(cf) or not len(text):
            raise ValueError(f"need the same, non-zero number of text ({len(text)}) and CF ({len(cf)}) rows")
        x = torch.cat([text.double(), text.new_ones(len(text), 1, dtype=torch.float64)], 1)
        y = F.normalize(cf.double(), dim=-1)
        reg = ridge * torch.eye(x.shape[1], dtype=torch.float64)
        reg[-1, -1] = 0.0  # the bias is not shrunk
        w = torch.linalg.solve(x.T @ x + reg, x.T @ y)
        self.cf_map = w.float().to(self.cf_map.device)
        return float(F.cosine_similarity(x @ w, y, dim=-1).mean())

    def predict_cf(self, text: Tensor) -> Tensor:
        """(b, cf_dim) the CF vectors `fit_cf_map` predicts from text (b, embed_dim), L2-normalised."""
        return F.normalize(text @ self.cf_map[:-1] + self.cf_map[-1], dim=-1)

    def fuse(self, text: Tensor, cf: Tensor | None = None, has_cf: Tensor | None = None) -> Tensor:
        """The autoencoder's input (b, input_dim): the text embedding, then (with `cf_dim > 0`) the CF vector
        L2-normalised and scaled by `cf_weight`. Rows without CF (`cf` None, or `has_cf` (b,) False) use the CF vector
        predicted from their text (`predict_cf`), so a cold item's input depends on its text alone."""
        self._check(text)
        f = self.config.cf_dim
        if not f:
            if cf is not None:
                raise ValueError("this item tokenizer has cf_dim=0: it takes no CF vectors")
            return text
        part = self.predict_cf(text)
        if cf is not None:
            self._check(cf, f, "CF vectors")
            if len(cf) != len(text):
                raise ValueError(f"{len(text)} text rows but {len(cf)} CF rows")
            warm = torch.ones(len(cf), dtype=torch.bool, device=cf.device) if has_cf is None \
                else torch.as_tensor(has_cf, dtype=torch.bool, device=cf.device)
            if warm.shape != (len(cf),):
                raise ValueError(f"has_cf must be ({len(cf)},) bool, got {tuple(warm.shape)}")
            part = torch.where(warm[:, None], F.normalize(cf.float(), dim=-1), part)
        return torch.cat([text, self.config.cf_weight * part], 1)

    @abc.abstractmethod
    def encode(self, emb: Tensor, cf: Tensor | None = None, has_cf: Tensor | None = None) -> Tensor:
        """Prefix codes (b, prefix_length) of text embeddings (b, embed_dim), fused with CF vectors `cf` (b, cf_dim)
        where given and `has_cf` allows (see `fuse`), else with the CF vectors predicted from text."""

    # -- the frozen table --------------------------------------------------------------------------------------
    @torch.no_grad()
    def build_table(self, emb: Tensor, cf: Tensor | None = None, has_cf: Tensor | None = None,
                    batch_size: int = 8192) -> dict:
        """Freeze the item -> codes table from all item text embeddings (N, embed_dim) and, with `cf_dim > 0`, their
        CF vectors (N, cf_dim) with `has_cf` (N,) bool marking the items that have them (default: all); returns
        `table_stats()`."""
        self._check(emb)
        if self.config.cf_dim and cf is None:
            raise ValueError("this item tokenizer fuses CF vectors (cf_dim > 0): pass cf (and has_cf) to build_table")
        was = self.training
        self.eval()

        def part(t, s):
            return None if t is None else torch.as_tensor(t)[s: s + batch_size]

        codes = torch.cat([self.encode(emb[s: s + batch_size], part(cf, s), part(has_cf, s))
                           for s in range(0, len(emb), batch_size)]) \
            if len(emb) else torch.zeros(0, self.config.prefix_length, dtype=torch.long)
        self.train(was)
        self.codes = torch.zeros(0, self.code_length, dtype=torch.long)
        self.config = replace(self.config, num_items=0)
        self._append(codes)
        return self.table_stats()

    @torch.no_grad()
    def add_items(self, emb: Tensor) -> Tensor:
        """Append new items from their text embeddings (m, embed_dim) alone (with `cf_dim > 0`, their CF part is
        predicted from the text); returns their new item indices (m,)."""
        start = self.num_items
        self._append(self.encode(emb))
        return torch.arange(start, self.num_items)

    def keep_items(self, rows: Tensor) -> None:
        """Keep the table rows of items `rows` (m,) distinct indices, in that order: codes stay unique and new items
        are appended after them as usual."""
        rows = check_ids(torch.as_tensor(rows), self.num_items, shape=(None,), what="items to keep")
        if len(torch.unique(rows)) != len(rows):
            raise ValueError("items to keep must be distinct")
        self.codes = self.codes[rows.to(self.codes.device)]
        self.config = replace(self.config, num_items=self.codes.shape[0])

    def _append(self, prefix: Tensor) -> None:
        """Give each new prefix (m, prefix_length) the next free suffix among items already sharing it: one past the
        largest suffix in use (after `keep_items` dropped some, a count of the group could repeat one), then in
        catalog order among the new items."""
        device, old, prefix = self.codes.device, self.codes.cpu(), prefix.long().cpu()
        _, group = torch.unique(torch.cat([old[:, :-1], prefix]), dim=0, return_inverse=True)
        n_old = old.shape[0]
        n_groups = int(group.max()) + 1 if len(group) else 0
        counts = torch.zeros(n_groups, dtype=torch.long).scatter_reduce(  # next free suffix per group
            0, group[:n_old], old[:, -1] + 1, reduce="amax")
        suffix = torch.empty(len(prefix), dtype=torch.long)
        new_groups = group[n_old:]
        # rank of each new item within its group, in order: stable sort by group then count equal predecessors
        order = torch.sort(new_groups, stable=True).indices
        sorted_g = new_groups[order]
        first = torch.searchsorted(sorted_g, sorted_g, right=False)
        rank_in_group = torch.arange(len(sorted_g)) - first
        suffix[order] = counts[sorted_g] + rank_in_group if len(sorted_g) else rank_in_group
        if len(suffix) and int(suffix.max()) >= self.config.max_suffix:
            raise ValueError(
                f"{int(suffix.max()) + 1} items share the same codes, more than max_suffix={self.config.max_suffix}; "
                "use more code levels or a larger codebook, or raise max_suffix"
            )
        self.codes = torch.cat([old, torch.cat([prefix, suffix[:, None]], 1)]).to(device)
        self.config = replace(self.config, num_items=self.codes.shape[0])

    def table_stats(self) -> dict:
        """The code-usage report: per prefix position the fraction of its codebook in use (`codebook_usage`), the
        distinct prefixes of length 1..prefix_length (`unique_prefixes_per_level`), how many items collide on their
        whole prefix (`collision_rate`: fraction that needed a non-zero suffix; `colliding_items`: fraction sharing
        their prefix with another item), the largest suffix used, and whether every full code is unique."""
        codes = self.codes.cpu()
        n, p = codes.shape[0], self.config.prefix_length
        if n == 0:
            return {"items": 0}
        usage = [int(torch.unique(codes[:, i]).numel()) / v for i, v in enumerate(self.prefix_vocab)]
        per_level = [int(torch.unique(codes[:, : i + 1], dim=0).shape[0]) for i in range(p)]
        _, group, size = torch.unique(codes[:, :-1], dim=0, return_inverse=True, return_counts=True)
        return {
            "items": n,
            "codebook_usage": usage,
            "unique_prefixes": per_level[-1],
            "unique_prefixes_per_level": per_level,
            "collision_rate": 1.0 - per_level[-1] / n,  # fraction of items that needed a non-zero suffix
            "colliding_items": int((size[group] > 1).sum()) / n,
            "max_suffix_used": int(codes[:, -1].max()),
            "unique_codes": int(torch.unique(codes, dim=0).shape[0]) == n,
        }

@register("recsys.item_tokens")
class ItemTokenizer(PretrainedMixin, ItemCodes):
    config_class = ItemTokenizerConfig

    def __init__(self, config: ItemTokenizerConfig):
        super().__init__()
        self.config = config
        c, q, f = config.embed_dim // config.n_chunks, len(config.levels), config.cf_dim
        self.encoders = nn.ModuleList(  # chunk i's text (+ the whole CF vector) -> token i
            nn.Sequential(nn.LayerNorm(c + f), nn.Linear(c + f, config.hidden), nn.GELU(), nn.Linear(config.hidden, q))
            for _ in range(config.n_chunks)
        )
        self.fsq = FSQ(FSQConfig(dim=q, levels=config.levels))
        self.decoders = nn.ModuleList(
            nn.Sequential(nn.Linear(q, config.hidden), nn.GELU(), nn.Linear(config.hidden, c))
            for _ in range(config.n_chunks)
        )
        if f:
            self.cf_decoder = nn.Sequential(nn.Linear(q * config.n_chunks, config.hidden), nn.GELU(),
                                            nn.Linear(config.hidden, f))
        self._init_table()

    # -- sizes ---------------------------------------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return self.fsq.codebook_size

    @property
    def prefix_vocab(self) -> list[int]:
        return [self.codebook_size] * self.config.n_chunks

    # -- autoencoder -------------------------------------------------------------------------------------------
    def chunks(self, emb: Tensor) -> Tensor:
        """(b, embed_dim) -> (b, n_chunks, embed_dim / n_chunks)."""
        return rearrange(emb, "b (n c) -> b n c", n=self.config.n_chunks)

    def _latent(self, x: Tensor) -> Tensor:
        """Fused inputs (b, input_dim) -> FSQ latents (b, n_chunks, q)."""
        e = self.config.embed_dim
        parts, cf = self.chunks(x[:, :e]), x[:, e:]
        if cf.shape[1]:
            parts = torch.cat([parts, cf[:, None].expand(-1, parts.shape[1], -1)], 2)
        return torch.stack([enc(parts[:, i]) for i, enc in enumerate(self.encoders)], 1)

    def forward(self, x: Tensor) -> ItemTokenizerOutput:
        """Reconstruct `x` (b, input_dim) (text embeddings, or `fuse` outputs when `cf_dim > 0`) through the FSQ
        bottleneck; loss = MSE + (1 - cosine) on the text, plus `cf_weight` times the same on the unit CF vector."""
        self._check(x, self.config.input_dim, "tokenizer inputs")
        q = self.fsq(self._latent(x))
        recon = rearrange(torch.stack([dec(q.quantized[:, i]) for i, dec in enumerate(self.decoders)], 1),
                          "b n c -> b (n c)")
        if self.config.cf_dim:
            cf_recon = self.cf_decoder(rearrange(q.quantized, "b n q -> b (n q)"))
            recon = torch.cat([recon, self.config.cf_weight * cf_recon], 1)
        loss, metrics = reconstruction_loss(recon, x, self.config.embed_dim, self.config.cf_weight)
        return ItemTokenizerOutput(recon, q.indices, loss, {**metrics, **q.metrics})

    @torch.no_grad()
    def encode(self, emb: Tensor, cf: Tensor | None = None, has_cf: Tensor | None = None) -> Tensor:
        """Chunk codes (b, n_chunks) of text embeddings (b, embed_dim), without the suffix; with `cf_dim > 0` fused
        with CF vectors `cf` (b, cf_dim) where given (see `fuse`), else with the CF vectors predicted from text."""
        return self.fsq.encode(self._latent(self.fuse(emb, cf, has_cf)))

