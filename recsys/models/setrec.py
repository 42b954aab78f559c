"""SETRec-style generative recommender: every item is an order-agnostic **set** of tokens, all generated at once.

Set identifier of item i (each token a `tok_dim` vector):
  * one CF token   = `cf_proj(sasrec_item_embedding[i])` (a frozen, trained SASRec table supplies the signal);
  * n semantic tokens from an autoencoder over the item's text embedding, trained jointly (weighted reconstruction
    loss). `semantic="continuous"` keeps them continuous (as in the paper); `semantic="fsq"` discretises each token
    with the core `FSQ` quantizer; `semantic="rqvae"` takes them from a trained RQ-VAE (`recsys.semantic_ids`, set
    with `set_catalog(..., ids=)`): token j is level j's codeword of the item through a learned projection.

History encoding: every token of a history item goes through the *same* input projection and gets the *same* item
position id, and attends only to itself and to the tokens of earlier items (sparse mask). So the order of the tokens
inside an item cannot matter. `n + 1` learned queries, placed after the history, attend to the whole history (and to
themselves only), and produce every token of the next item in one forward pass.

Scoring: generated token j is matched (inner product) against token j of every catalog item; the item score is
`w * cf_part + (1 - w) * semantic_part`, with `w` chosen on validation cases only
(`recsys.evaluation.select_cf_weight`). Because the score is one inner product between concatenated vectors, top-K
uses a faiss inner-product index for large catalogs (exact flat, or approximate HNSW / IVF past `approx_min_items`:
`recsys.index`) and exact brute force for small ones. Items added later (`add_items`) or marked cold (`drop_cf`) have
no CF signal: their CF token is zero, their missing CF part is imputed by their semantic part (so they score from
their text alone, at any weight), and training leaves them out of the softmax.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gentok.checkpoint import PretrainedMixin, register
from gentok.config import config, replace
from gentok.nn import Transformer, init_weights
from gentok.quantizers import FSQ, FSQConfig
from gentok.validate import check_ids
from recsys.index import INDEX_KINDS, IndexCache, brute_topk, resolve_index
from recsys.models.base import Recommender, RecOutput, pad_histories, seen_mask
from recsys.semantic_ids import SemanticIdConfig, SemanticIds


@config
class SETRecConfig:
    num_items: int = 0  # catalog rows (set by `set_catalog` / `add_items`)
    embed_dim: int = 384  # item text embedding width (all-MiniLM-L6-v2)
    cf_dim: int = 64  # SASRec item embedding width
    n_semantic: int = 4  # semantic tokens per item (the set has n_semantic + 1 tokens)
    tok_dim: int = 32  # width of each set token
    semantic: str = "continuous"  # "continuous" (paper), "fsq" (discretised through the core FSQ) or "rqvae"
    ids: SemanticIdConfig | None = None  # semantic="rqvae": the RQ-VAE (n_levels == n_semantic) whose codewords it uses
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)
    ae_hidden: int = 256
    recon_weight: float = 1.0  # weight of the text reconstruction loss of the semantic autoencoder
    dim: int = 64
    depth: int = 2
    heads: int = 2
    max_items: int = 20  # history items the model sees
    dropout: float = 0.1
    temperature: float = 0.1  # softmax temperature of the catalog matching losses (token vectors are normalised)
    faiss_min_items: int = 20000  # catalogs at least this large are searched with a faiss index
    # which faiss index `recommend` searches: "flat" (exact), "ivf", "hnsw" (approximate), or "auto" = flat below
    # `approx_min_items`, IVF above (`recsys.index.resolve_index` says why); old saved configs get "auto", i.e. exact
    # below 200k
    index: str = "auto"
    approx_min_items: int = 200_000  # "auto" turns approximate here: a flat scan of 200k x 160 keys is still ~ms/user
    # IVF lists scanned per query; 0: calibrated on the first queries the index answers, the fewest lists that reach
    # `recall_target` recall@k against an exact search of those queries (see `recsys.index.calibrate_index`)
    nprobe: int = 0
    hnsw_ef: int = 0  # HNSW efSearch (candidates per query); 0: calibrated like nprobe
    recall_target: float = 0.95  # recall@k against exact search that calibration must reach on its probe queries

    def __post_init__(self):
        if self.dim % self.heads or self.dim < 1 or self.depth < 1 or self.max_items < 1:
            raise ValueError("dim must be a positive multiple of heads; depth and max_items must be >= 1")
        if min(self.embed_dim, self.cf_dim, self.n_semantic, self.tok_dim, self.ae_hidden) < 1 or self.num_items < 0:
            raise ValueError("embed_dim, cf_dim, n_semantic, tok_dim, ae_hidden must be >= 1; num_items >= 0")
        if self.semantic not in ("continuous", "fsq", "rqvae"):
            raise ValueError(f"semantic must be 'continuous', 'fsq' or 'rqvae', got {self.semantic!r}")
        if (self.semantic == "rqvae") != (self.ids is not None) or self.ids is not None and (
                self.ids.n_levels != self.n_semantic or self.ids.embed_dim != self.embed_dim):
            raise ValueError("semantic='rqvae' needs ids=SemanticIdConfig with n_levels == n_semantic and the same "
                             "embed_dim (and other semantic kinds no ids)")
        if not 0.0 <= self.dropout < 1.0 or self.recon_weight < 0 or self.temperature <= 0:
            raise ValueError("dropout must lie in [0, 1), recon_weight >= 0 and temperature > 0")
        FSQConfig(dim=self.tok_dim, levels=self.fsq_levels)  # validates the levels
        if self.index not in INDEX_KINDS + ("auto",):
            raise ValueError(f"index must be one of {INDEX_KINDS + ('auto',)}, got {self.index!r}")
        if self.approx_min_items < 1 or self.nprobe < 0 or self.hnsw_ef < 0 or not 0 < self.recall_target <= 1:
            raise ValueError("approx_min_items must be >= 1, nprobe and hnsw_ef >= 0 (0: calibrated), recall_target "
                             "in (0, 1]")

    @classmethod
    def tiny(cls, embed_dim: int = 24, cf_dim: int = 16):
        return cls(embed_dim=embed_dim, cf_dim=cf_dim, n_semantic=3, tok_dim=8, fsq_levels=(5, 5, 3), ae_hidden=32,
                   dim=32, depth=1, heads=2, max_items=8, dropout=0.0)


PRESETS = {"tiny": SETRecConfig.tiny(384, 64), "small": SETRecConfig(),
           "base": SETRecConfig(dim=128, depth=4, heads=4, max_items=50, tok_dim=64)}


def set_mask(item_of: Tensor, is_query: Tensor, key_valid: Tensor) -> Tensor:
    """(b, 1, S, S) bool attention mask over a mixed sequence of history tokens and query tokens.

    item_of (S,) long: a history token's item slot, or the last history slot a query may read; is_query (S,) bool;
    key_valid (b, S) bool: padded history tokens are hidden. A history token sees itself and every token of an
    *earlier* item (never its siblings, so tokens of one item stay independent); a query sees itself and every
    history token of items <= its slot. Nobody attends to a query except the query itself.
    """
    hist_key = ~is_query[None, :]
    earlier = item_of[None, :] < item_of[:, None]
    upto = item_of[None, :] <= item_of[:, None]
    allowed = hist_key & torch.where(is_query[:, None], upto, earlier)  # (S, S)
    S = item_of.shape[0]
    mask = (allowed[None] & key_valid[:, None, :]) | torch.eye(S, dtype=torch.bool, device=item_of.device)[None]
    return mask[:, None]


@register("recsys.setrec")
class SETRec(PretrainedMixin, Recommender, nn.Module):
    config_class = SETRecConfig

    def __init__(self, config: SETRecConfig):
        super().__init__()
        self.config = config
        c, n, k, d = config, config.n_semantic, config.tok_dim, config.dim
        self.register_buffer("text", torch.zeros(c.num_items, c.embed_dim))  # frozen item text embeddings
        self.register_buffer("cf", torch.zeros(c.num_items, c.cf_dim))  # frozen SASRec item embeddings
        self.register_buffer("has_cf", torch.zeros(c.num_items, dtype=torch.bool))  # False: cold item, text only
        self.register_buffer("cf_weight", torch.tensor(0.5))  # chosen on validation (`evaluation.select_cf_weight`)
        self.cf_proj = nn.Linear(c.cf_dim, k)
        self.sem_enc = nn.Sequential(nn.LayerNorm(c.embed_dim), nn.Linear(c.embed_dim, c.ae_hidden), nn.GELU(),
                                     nn.Linear(c.ae_hidden, n * k))
        self.sem_dec = nn.Sequential(nn.Linear(n * k, c.ae_hidden), nn.GELU(), nn.Linear(c.ae_hidden, c.embed_dim))
        self.in_proj = nn.Linear(k, d)  # shared by every token of an item: no slot identity in the history
        self.item_pos = nn.Embedding(c.max_items + 1, d)  # one id per item; the queries use the next one
        self.queries = nn.Parameter(torch.randn(n + 1, d) * 0.02)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = Transformer(d, c.depth, c.heads, dropout=c.dropout)
        self.out_norm = nn.LayerNorm(d)
        self.out_proj = nn.ModuleList(nn.Linear(d, k) for _ in range(n + 1))
        init_weights(self)
        # built after init_weights: FSQ keeps its own projection init (a 0.02-std projection would round every item
        # to the centre code), and sees unit-scale (layer-normed) inputs
        self.fsq = FSQ(FSQConfig(dim=k, levels=c.fsq_levels)) if c.semantic == "fsq" else None
        self.fsq_norm = nn.LayerNorm(k) if c.semantic == "fsq" else None
        if c.ids is not None:  # frozen RQ-VAE (its table grows with the catalog); one codeword projection per level
            self.ids = SemanticIds(c.ids).requires_grad_(False)
            self.ids_proj = nn.ModuleList(nn.Linear(c.ids.latent_dim, k) for _ in range(n))
        self._reset_cache()  # eval-time caches of the catalog's set tokens and its faiss index (`catalog_table`)

    # -- cache: the catalog table only changes with the weights or the catalog --------------------------------------
    def _reset_cache(self) -> None:
        if getattr(self, "ids", None) is not None:  # every catalog change ends here: the config records the RQ-VAE's
            self.config = replace(self.config, ids=self.ids.config)  # table size, so the saved model rebuilds it
        self._table, self._keys = None, None
        self.indexes = IndexCache()  # faiss indexes over `_keys` and what calibration chose for them

    @property
    def index_calibration(self) -> dict:
        """Index kind -> what `recsys.index.calibrate_index` chose for the cached index of that kind."""
        return self.indexes.calibration

    def train(self, mode: bool = True):
        self._reset_cache()
        return super().train(mode)

    def load_state_dict(self, *args, **kwargs):
        self._reset_cache()
        return super().load_state_dict(*args, **kwargs)

    def _apply(self, fn, *args, **kwargs):  # .to() / .float() / .cuda()
        self._reset_cache()
        return super()._apply(fn, *args, **kwargs)

    def catalog_table(self) -> Tensor:
        """Set tokens of the whole catalog (N, n+1, tok_dim). Cached in eval mode, so scoring many batches encodes
        the catalog once; recomputed in training mode and after `train()`, `load_state_dict`, or a catalog change."""
        if self.training:
            return self.item_tokens()[0]
        if self._table is None or len(self._table) != self.num_items:
            with torch.no_grad():
                self._table = self.item_tokens()[0]
        return self._table

    # -- catalog --------------------------------------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        return self.config.num_items

    @property
    def set_size(self) -> int:
        return self.config.n_semantic + 1

    def set_catalog(self, text: Tensor, cf: Tensor, ids: SemanticIds | None = None) -> None:
        """Item text embeddings (N, embed_dim) and trained SASRec item embeddings (N, cf_dim), row i = item i; with
        semantic="rqvae" also the trained RQ-VAE `ids` whose table holds the same N items."""
        if text.ndim != 2 or cf.ndim != 2 or len(text) != len(cf):
            raise ValueError(f"text {tuple(text.shape)} and cf {tuple(cf.shape)} must be (N, *) with the same N")
        if text.shape[1] != self.config.embed_dim or cf.shape[1] != self.config.cf_dim:
            raise ValueError(f"expected widths embed_dim={self.config.embed_dim}, cf_dim={self.config.cf_dim}; got "
                             f"{text.shape[1]}, {cf.shape[1]}")
        dev = self.cf_proj.weight.device
        want, got = self.config.ids, None if ids is None else replace(ids.config, num_items=ids.num_items)
        if (want or got) and (not want or not got or replace(want, num_items=len(text)) != got):
            raise ValueError(f"semantic={self.config.semantic!r}: expected ids= an RQ-VAE of config {want} holding "
                             f"the {len(text)} items, got {got}")
        if ids is not None:
            self.ids = ids.to(dev).requires_grad_(False)
        self.text, self.cf = text.float().to(dev), cf.detach().float().to(dev)
        self.has_cf = torch.ones(len(text), dtype=torch.bool, device=dev)
        self.config = replace(self.config, num_items=len(text))
        self._reset_cache()

    def drop_cf(self, items: Tensor) -> None:
        """Treat `items` as cold: their CF token becomes zero, so they score from their text alone (e.g. items with
        no interactions in the data the SASRec table was trained on), and training leaves them out of the softmax
        (never trained as negatives), as for items added after training."""
        items = check_ids(torch.as_tensor(items), self.num_items, shape=(None,), what="items to drop")
        self.has_cf[items.to(self.has_cf.device)] = False
        self._reset_cache()

    @torch.no_grad()
    def add_items(self, text: Tensor) -> Tensor:
        """Add items from their text embeddings (m, embed_dim) alone (no CF signal); returns their indices."""
        if text.ndim != 2 or text.shape[1] != self.config.embed_dim:
            raise ValueError(f"new item text embeddings must be (m, {self.config.embed_dim}), got {tuple(text.shape)}")
        m, start = len(text), self.num_items
        if self.config.ids is not None:  # codes from text alone (CF part predicted), as for any cold item
            self.ids.add_items(text.float().to(self.text.device))
        self.text = torch.cat([self.text, text.float().to(self.text.device)])
        self.cf = torch.cat([self.cf, self.cf.new_zeros(m, self.config.cf_dim)])
        self.has_cf = torch.cat([self.has_cf, self.has_cf.new_zeros(m)])
        self.config = replace(self.config, num_items=start + m)
        self._reset_cache()
        return torch.arange(start, start + m)

    @property
    def text_dim(self) -> int:
        return self.config.embed_dim

    def keep_items(self, rows: Tensor) -> None:
        """Narrow the catalog to items `rows` in that order (each keeps its text, CF signal and cold flag)."""
        rows = self.check_rows(rows).to(self.text.device)
        self.text, self.cf, self.has_cf = self.text[rows], self.cf[rows], self.has_cf[rows]
        if self.config.ids is not None:
            self.ids.keep_items(rows)
        self.config = replace(self.config, num_items=len(rows))
        self._reset_cache()

    def item_tokens(self, items: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Set tokens (m, n+1, tok_dim) of `items` (all when None; slot 0 = CF, zero for cold items) and the text
        reconstruction loss of the semantic autoencoder on them (0 with RQ-VAE tokens: that autoencoder is frozen)."""
        text = self.text if items is None else self.text[items]
        has_cf = self.has_cf if items is None else self.has_cf[items]
        cfe = self.cf if items is None else self.cf[items]
        if self.config.ids is not None:
            codes = self.ids.codes[:, :-1] if items is None else self.ids.codes[items, :-1]  # the extra index is not
            words = self.ids.codewords(codes)  # needed: SETRec scores every item, equal sets may tie
            sem, recon = torch.stack([p(words[:, j]) for j, p in enumerate(self.ids_proj)], 1), text.new_zeros(())
        else:
            sem = rearrange(self.sem_enc(text), "m (n k) -> m n k", n=self.config.n_semantic)
            if self.fsq is not None:
                sem = self.fsq(self.fsq_norm(sem)).quantized
            recon = F.mse_loss(self.sem_dec(rearrange(sem, "m n k -> m (n k)")), text) * text.shape[1]
        cf_tok = self.cf_proj(cfe) * has_cf[:, None]
        toks = torch.cat([cf_tok[:, None], sem], 1)
        return F.normalize(toks, dim=-1), recon  # a cold item's zero CF token stays zero

    # -- encoder --------------------------------------------------------------------------------------------------
    def generate(self, tokens: Tensor, valid: Tensor, all_positions: bool = False) -> Tensor:
        """History set tokens (b, T, n+1, tok_dim) + valid (b, T) -> generated next-item tokens (b, n+1, tok_dim),
        or (b, T, n+1, tok_dim) with `all_positions` (the next item after every history slot, for training).
        One encoder pass produces every token of the predicted item(s)."""
        b, T, L, _ = tokens.shape
        if T > self.config.max_items:
            raise ValueError(f"at most {self.config.max_items} history items, got {T}")
        dev = tokens.device
        x = self.in_proj(tokens) + self.item_pos.weight[:T][None, :, None]
        x = rearrange(x * valid[..., None, None], "b t l d -> b (t l) d")
        slots = torch.arange(T, device=dev) if all_positions else torch.tensor([T - 1], device=dev)
        q = self.queries[None] + self.item_pos.weight[slots + 1][:, None]  # (P, L, d)
        q = rearrange(q, "p l d -> (p l) d")[None].expand(b, -1, -1)
        seq = self.drop(torch.cat([x, q], 1))
        item_of = torch.cat([torch.arange(T, device=dev).repeat_interleave(L), slots.repeat_interleave(L)])
        is_query = torch.cat([torch.zeros(T * L, dtype=torch.bool, device=dev),
                              torch.ones(len(slots) * L, dtype=torch.bool, device=dev)])
        key_valid = torch.cat([valid.repeat_interleave(L, 1), valid.new_ones(b, len(slots) * L)], 1)
        h = self.out_norm(self.encoder(seq, mask=set_mask(item_of, is_query, key_valid))[:, T * L:])
        h = rearrange(h, "b (p l) d -> b p l d", l=L)
        out = torch.stack([self.out_proj[j](h[:, :, j]) for j in range(L)], 2)
        out = F.normalize(out, dim=-1)
        return out if all_positions else out[:, 0]

    # -- training -------------------------------------------------------------------------------------------------
    def forward(self, window: Tensor) -> RecOutput:
        """Windows (b, T+1) of item indices left-padded with -1. Each history slot predicts the next item's set;
        full-softmax catalog matching losses for the CF and semantic parts + weighted text reconstruction."""
        ids, targets = window[:, :-1], window[:, 1:]
        valid = ids >= 0
        table, recon = self.item_tokens()  # (N, L, k): gradients reach the projection and the autoencoder
        hist = table[ids.clamp(min=0)]
        gen = self.generate(hist, valid, all_positions=True)  # (b, T, L, k)
        use = valid & (targets >= 0)
        g, t = gen[use], targets[use]  # (m, L, k)
        cf_logits, sem_logits = self.part_scores(g, table)
        if not bool(self.has_cf.all()):
            # cold items (no CF signal: no interactions behind the SASRec table) are left out of the training softmax,
            # as if added after training; otherwise every step teaches the model that they are never the answer
            out = ~self.has_cf[None, :] & (torch.arange(self.num_items, device=t.device)[None, :] != t[:, None])
            cf_logits = cf_logits.masked_fill(out, float("-inf"))
            sem_logits = sem_logits.masked_fill(out, float("-inf"))
        tau = self.config.temperature
        loss_cf = F.cross_entropy(cf_logits / tau, t)
        loss_sem = F.cross_entropy(sem_logits / tau, t)
        loss = loss_cf + loss_sem + self.config.recon_weight * recon
        acc = ((cf_logits + sem_logits).argmax(-1) == t).float().mean()
        return RecOutput(loss, {"loss_cf": loss_cf.detach(), "loss_sem": loss_sem.detach(), "recon": recon.detach(),
                                "acc": acc.detach()})

    # -- scoring --------------------------------------------------------------------------------------------------
    def part_scores(self, gen: Tensor, table: Tensor) -> tuple[Tensor, Tensor]:
        """gen (b, L, k), table (N, L, k) -> CF part (b, N) and semantic part (b, N) (mean over semantic slots):
        token j of the generation is matched against token j of every item only."""
        cf = gen[:, 0] @ table[:, 0].T
        sem = torch.einsum("blk,nlk->bn", gen[:, 1:], table[:, 1:]) / self.config.n_semantic
        return cf, sem

    def _history_tokens(self, histories: Sequence, table: Tensor) -> tuple[Tensor, Tensor]:
        ids, valid = pad_histories(histories, self.config.max_items, -1)
        ids, valid = ids.to(table.device), valid.to(table.device)
        return table[ids.clamp(min=0)], valid

    @torch.no_grad()
    def queries_and_keys(self, histories: Sequence, weight: float | None = None) -> tuple[Tensor, Tensor]:
        """Scoring as one inner product: query (b, D) = [w * cf token, (1-w)/n * semantic tokens], key (N, D) = the
        catalog's concatenated set tokens, so `query @ key.T == w * cf_part + (1 - w) * semantic_part`.

        Cold items have no CF part; it is imputed by their semantic part (a cold item scores `semantic_part` at any
        w, instead of losing the whole CF share to warm items). When the catalog has cold items, query and key get a
        third block, [w/n * semantic tokens] and [semantic tokens if cold else 0], which adds exactly that."""
        keys = self.catalog_keys()
        gen = self.generate(*self._history_tokens(histories, self.catalog_table()))
        w = float(self.cf_weight) if weight is None else weight
        n = self.config.n_semantic
        parts = [gen[:, 0] * w, gen[:, 1:].flatten(1) * ((1 - w) / n)]
        if keys.shape[1] > self.set_size * self.config.tok_dim:
            parts.append(gen[:, 1:].flatten(1) * (w / n))
        return torch.cat(parts, 1), keys

    def catalog_keys(self) -> Tensor:
        """(N, D) keys of `queries_and_keys` (cached with the table in eval mode)."""
        if not self.training and self._keys is not None and len(self._keys) == self.num_items:
            return self._keys
        table = self.catalog_table()
        keys = table.flatten(1)
        cold = ~self.has_cf
        if bool(cold.any()):
            keys = torch.cat([keys, (table[:, 1:] * cold[:, None, None]).flatten(1)], 1)
        if not self.training:
            self._keys = keys
        return keys

    @torch.no_grad()
    def score_all(self, histories: Sequence, weight: float | None = None) -> Tensor:
        q, keys = self.queries_and_keys(histories, weight)
        return q @ keys.T

    @torch.no_grad()
    def part_scores_for(self, histories: Sequence) -> tuple[Tensor, Tensor]:
        """(CF part, semantic part), each (b, N), for validation-time weight selection; a cold item's CF part is its
        semantic part (imputed, as in `queries_and_keys`)."""
        table = self.catalog_table()
        cf, sem = self.part_scores(self.generate(*self._history_tokens(histories, table)), table)
        return torch.where(self.has_cf[None, :], cf, sem), sem

    @torch.no_grad()
    def recommend(self, histories: Sequence, k: int = 10, exclude_seen: bool = True,
                  use_faiss: bool | None = None, index: str | None = None) -> tuple[Tensor, Tensor]:
        """Top-k items (b, k) and scores (b, k): faiss inner-product search when the catalog has at least
        `faiss_min_items` items (or `use_faiss=True`), exact brute force otherwise. The faiss index is `index`
        (default `config.index`; "auto" resolves by catalog size, `recsys.index.resolve_index`); it is built once and
        cached in eval mode, and rebuilt whenever the catalog table is (weights, catalog, device changes)."""
        self.check_histories(histories)
        q, keys = self.queries_and_keys(histories)
        if use_faiss is None:
            use_faiss = self.num_items >= self.config.faiss_min_items
        exclude = seen_mask(histories, self.num_items) if exclude_seen else None
        if not use_faiss:
            return brute_topk(q, keys, k, exclude)
        kind = resolve_index(self.config.index if index is None else index, self.num_items,
                             self.config.approx_min_items)
        c = self.config
        most_seen = max((len(set(map(int, h))) for h in histories), default=0) if exclude_seen else 0
        return self.indexes.search(q, keys, k, kind, exclude, max_excluded=most_seen, nprobe=c.nprobe,
                                   hnsw_ef=c.hnsw_ef, recall_target=c.recall_target, keep=not self.training)
