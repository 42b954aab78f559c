"""RecGPT-style generative recommender: a transformer over the item-token sequence of a user's history.

Each history item is its `L` codes from the frozen item tokenizer: FSQ chunk codes (`recsys.item_tokens`) or RQ-VAE
semantic ids (`recsys.semantic_ids`), chosen by the type of `RecGPTConfig.tokenizer`; both end in the
disambiguation suffix. Token embedding = code embedding + the projected
text chunk the code came from + the item's position + the token's position inside the item (+, with `id_embedding`,
a learned embedding of the item's id, added to each of its tokens; items added later from text get a zero one).
Attention is **hybrid**: bidirectional among the tokens of one item, causal across items. The mean of an item's
outputs is the context that predicts the *next* item, whose tokens are generated one after another by a light prefix
decoder (`decode_logprobs` / `decode_advance`), so decoding can be constrained to the catalog trie
(`recsys.decoding`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gentok.checkpoint import PretrainedMixin, register
from gentok.config import config, replace
from gentok.nn import MLP, Transformer, init_weights
from recsys.decoding import CatalogIndex, beam_search, exact_top_k, score_catalog
from recsys.item_tokens import ItemCodes, ItemTokenizerConfig
from recsys.models.base import Recommender, RecOutput, pad_histories
from recsys.semantic_ids import SemanticIdConfig, build_item_tokenizer


@config
class RecGPTConfig:
    tokenizer: ItemTokenizerConfig | SemanticIdConfig = ItemTokenizerConfig()  # FSQ chunk codes, or RQ-VAE ids
    dim: int = 64
    depth: int = 2
    heads: int = 2
    max_items: int = 20  # history items the model sees (sequence length = max_items * code length)
    dropout: float = 0.1
    beam: int = 20  # default beam width of `recommend`
    # a learned per-item id embedding added to the input tokens (SASRec's memory of items); off: it lowered validation
    # NDCG@10 on the demo split at a 50 CPU-second budget (text codes 0.0034 -> 0.0021, collaborative 0.0156 -> 0.0115)
    id_embedding: bool = False
    label_smoothing: float = 0.0  # of each code level's cross entropy (0 = plain next-token likelihood)

    def __post_init__(self):
        if self.dim % self.heads or self.dim < 1 or self.depth < 1 or self.max_items < 1:
            raise ValueError("dim must be a positive multiple of heads; depth and max_items must be >= 1")
        if not 0.0 <= self.dropout < 1.0 or self.beam < 1 or not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("dropout and label_smoothing must lie in [0, 1) and beam >= 1")
        if self.tokenizer.embed_dim % self.tokenizer.prefix_length:
            raise ValueError(f"RecGPT adds one text chunk to each of an item's {self.tokenizer.prefix_length} codes: "
                             f"embed_dim ({self.tokenizer.embed_dim}) must be a multiple of that")

    @classmethod
    def tiny(cls, embed_dim: int = 24):
        return cls(tokenizer=ItemTokenizerConfig.tiny(embed_dim), dim=32, depth=1, heads=2, max_items=8,
                   dropout=0.0, beam=8)


# label smoothing 0.1 in the trained presets, chosen on validation (all 671 demo users; the recipe's 3000 steps and
# RQ-VAE text + CF codes, one run each): RecGPT on SASRec validation NLL 7.014 against 7.046 without smoothing and
# 7.016 with dropout 0.3; pooled NDCG@10 0.0710 / 0.0700 / 0.0696; RecGPT alone 0.0651 / 0.0658 / 0.0597, and its own
# NLL 7.55 / 7.89 / 7.77 (smoothing calibrates its probabilities, which is what the pooling reads)
PRESETS = {"tiny": RecGPTConfig.tiny(384), "small": RecGPTConfig(label_smoothing=0.1),
           "base": RecGPTConfig(dim=128, depth=4, heads=4, max_items=50, label_smoothing=0.1)}


def hybrid_mask(n_items: int, length: int, valid: Tensor | None = None) -> Tensor:
    """Bool mask (n_items*length, n_items*length), or (b, 1, n, n) with key padding from `valid` (b, n_items):
    token i may attend to token j iff item(j) <= item(i). Padded query rows attend to themselves (no NaN)."""
    item = torch.arange(n_items).repeat_interleave(length)
    mask = item[None, :] <= item[:, None]
    if valid is None:
        return mask
    key_valid = valid.repeat_interleave(length, dim=1)  # (b, n)
    mask = mask[None] & key_valid[:, None, :]
    mask = mask | torch.eye(n_items * length, dtype=torch.bool)[None]
    return mask[:, None]


@register("recsys.recgpt")
class RecGPT(PretrainedMixin, Recommender, nn.Module):
    config_class = RecGPTConfig

    def __init__(self, config: RecGPTConfig):
        super().__init__()
        self.config = config
        self.items = build_item_tokenizer(config.tokenizer)
        tc, d = config.tokenizer, config.dim
        self.L = tc.prefix_length + 1
        self.vocab = self.items.vocab_sizes
        self.register_buffer("offsets", torch.tensor([0] + list(torch.cumsum(torch.tensor(self.vocab), 0)[:-1])),
                             persistent=False)
        self.register_buffer("text", torch.zeros(tc.num_items, tc.embed_dim))  # frozen item text embeddings
        self.code_emb = nn.Embedding(sum(self.vocab), d)
        n = tc.prefix_length  # text chunk i is added to code i (not to the suffix)
        self.chunk_proj = nn.Parameter(torch.randn(n, tc.embed_dim // n, d) * 0.02)
        self.item_pos = nn.Embedding(config.max_items, d)
        self.tok_pos = nn.Embedding(self.L, d)
        # (N, d) learned item-id embeddings; items added from text alone get zero rows (no id memory)
        self.id_emb = nn.Parameter(torch.randn(tc.num_items, d) * 0.02) if config.id_embedding else None
        self.drop = nn.Dropout(config.dropout)
        self.encoder = Transformer(d, config.depth, config.heads, dropout=config.dropout)
        # prefix decoder: state -> next token logits; state += f(state, chosen token)
        self.dec_norm = nn.ModuleList(nn.LayerNorm(d) for _ in range(self.L))
        self.dec_head = nn.ModuleList(nn.Linear(d, v) for v in self.vocab)
        self.dec_in = nn.Embedding(sum(self.vocab), d)
        self.dec_mlp = nn.ModuleList(MLP(d, 2 * d) for _ in range(self.L - 1))
        init_weights(self)
        self._index: CatalogIndex | None = None

    # -- catalog --------------------------------------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        return self.items.num_items

    def set_catalog(self, tokenizer: ItemCodes, text: Tensor) -> None:
        """Copy a trained tokenizer (with its frozen table) and the items' text embeddings (N, embed_dim) in. The
        tokenizer must be of the kind and sizes this model was built for (its code embeddings depend on them)."""
        if tokenizer.num_items != text.shape[0]:
            raise ValueError(f"tokenizer table has {tokenizer.num_items} items, text has {text.shape[0]} rows")
        if type(tokenizer) is not type(self.items) or tokenizer.vocab_sizes != self.vocab \
                or tokenizer.config.embed_dim != self.config.tokenizer.embed_dim:
            raise ValueError(f"this RecGPT was built for a {type(self.items).__name__} with code vocabularies "
                             f"{self.vocab} and {self.config.tokenizer.embed_dim}-d text, got a "
                             f"{type(tokenizer).__name__} with {tokenizer.vocab_sizes} and "
                             f"{tokenizer.config.embed_dim}-d: build RecGPT(replace(config, tokenizer=tok.config))")
        self.items = tokenizer
        self.text = text.float().to(self.code_emb.weight.device)
        if self.id_emb is not None and self.id_emb.shape[0] != tokenizer.num_items:
            self.id_emb = nn.Parameter(torch.randn(tokenizer.num_items, self.config.dim,
                                                   device=self.code_emb.weight.device) * 0.02)
        self.config = replace(self.config, tokenizer=tokenizer.config)
        self._index = None

    @torch.no_grad()
    def add_items(self, text: Tensor) -> Tensor:
        """Add new items from their text embeddings (m, embed_dim) alone; returns their item indices."""
        idx = self.items.add_items(text.float())
        self.text = torch.cat([self.text, text.float().to(self.text.device)])
        if self.id_emb is not None:
            zeros = self.id_emb.new_zeros(len(idx), self.config.dim)
            self.id_emb = nn.Parameter(torch.cat([self.id_emb.detach(), zeros]))
        self.config = replace(self.config, tokenizer=self.items.config)
        self._index = None
        return idx

    @property
    def text_dim(self) -> int:
        return self.config.tokenizer.embed_dim

    def keep_items(self, rows: Tensor) -> None:
        """Narrow the catalog to items `rows` in that order (their codes stay unique: a subset of unique codes)."""
        rows = self.check_rows(rows)
        self.items.keep_items(rows)
        self.text = self.text[rows.to(self.text.device)]
        if self.id_emb is not None:
            self.id_emb = nn.Parameter(self.id_emb.detach()[rows.to(self.id_emb.device)])
        self.config = replace(self.config, tokenizer=self.items.config)
        self._index = None

    @property
    def index(self) -> CatalogIndex:
        if self._index is None or self._index.num_items != self.num_items:
            self._index = CatalogIndex(self.items.codes, self.vocab)
        return self._index

    # -- encoder -------------------------------------------------------------------------------------------------
    def _embed(self, ids: Tensor, valid: Tensor) -> Tensor:
        """ids (b, T) item indices (any value where invalid) -> token embeddings (b, T*L, d)."""
        safe = ids.clamp(0, max(self.num_items - 1, 0))
        codes = self.items.codes[safe] + self.offsets  # (b, T, L)
        x = self.code_emb(codes)
        chunks = rearrange(self.text[safe], "b t (n c) -> b t n c", n=self.L - 1)
        text = torch.einsum("btnc,ncd->btnd", chunks, self.chunk_proj)
        x = torch.cat([x[:, :, :-1] + text, x[:, :, -1:]], 2)  # the suffix token has no text chunk
        if self.id_emb is not None:
            x = x + self.id_emb[safe][:, :, None]
        T = ids.shape[1]
        x = x + self.item_pos.weight[:T][None, :, None] + self.tok_pos.weight[None, None]
        x = x * valid[..., None, None]
        return rearrange(x, "b t l d -> b (t l) d")

    def contexts(self, ids: Tensor, valid: Tensor) -> Tensor:
        """Per history item, the context that predicts the following item: (b, T, d)."""
        T = ids.shape[1]
        if T > self.config.max_items:
            raise ValueError(f"at most {self.config.max_items} history items, got {T}")
        x = self.drop(self._embed(ids, valid))
        h = self.encoder(x, mask=hybrid_mask(T, self.L, valid))
        return rearrange(h, "b (t l) d -> b t l d", l=self.L).mean(2)

    # -- prefix decoder ------------------------------------------------------------------------------------------
    def decode_logprobs(self, state: Tensor, level: int) -> Tensor:
        """(m, d) -> (m, V_level) log-probabilities of the next item's token at `level`."""
        return F.log_softmax(self.dec_head[level](self.dec_norm[level](state)).float(), -1)

    def decode_advance(self, state: Tensor, tokens: Tensor, level: int) -> Tensor:
        """Feed the chosen token of `level` (m,) into the state (m, d)."""
        return state + self.dec_mlp[level](state + self.dec_in(tokens + self.offsets[level]))

    def decode_init(self, histories: Sequence) -> Tensor:
        ids, valid = pad_histories(histories, self.config.max_items, -1)
        return self.contexts(ids.to(self.text.device), valid.to(self.text.device))[:, -1]

    # -- training -------------------------------------------------------------------------------------------------
    def forward(self, window: Tensor) -> RecOutput:
        """Next-item loss on windows (b, T + 1) of item indices, left-padded with -1: every item predicts its
        successor's codes (teacher forcing inside the next item)."""
        ids, targets = window[:, :-1], window[:, 1:]
        valid = ids >= 0
        ctx = self.contexts(ids, valid)  # (b, T, d)
        use = valid & (targets >= 0)
        state, tgt = ctx[use], self.items.codes[targets[use]]  # (m, d), (m, L)
        loss = ctx.new_zeros(())
        acc = []
        for level in range(self.L):
            logp = self.decode_logprobs(state, level)
            # logp is normalized, so cross_entropy (its log_softmax a no-op) is the NLL, smoothed when asked
            loss = loss + F.cross_entropy(logp, tgt[:, level], label_smoothing=self.config.label_smoothing)
            acc.append((logp.argmax(-1) == tgt[:, level]).float().mean())
            if level < self.L - 1:
                state = self.decode_advance(state, tgt[:, level], level)
        return RecOutput(loss, {"token_acc": torch.stack(acc).mean().detach()})

    # -- recommendation -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def score_all(self, histories: Sequence) -> Tensor:
        """Exact log-probability of every catalog item (b, N), through the trie."""
        return score_catalog(self, self.decode_init(histories), self.index)

    @torch.no_grad()
    def recommend(self, histories: Sequence, k: int = 10, exclude_seen: bool = True,
                  beam: int | None = None, exact: bool = False) -> tuple[Tensor, Tensor]:
        """Catalog-constrained beam search: top-k items (b, k) and their log-probabilities (b, k). `exact`: the beam
        is widened where it cannot prove its result is the exact top-k of the item scores (`exact_top_k`)."""
        self.check_histories(histories)
        beam = max(beam or self.config.beam, k)
        state = self.decode_init(histories)
        exclude = list(histories) if exclude_seen else None
        if exact:
            return exact_top_k(self, state, self.index, beam, k, exclude=exclude)[:2]
        return beam_search(self, state, self.index, beam, k, exclude=exclude)
