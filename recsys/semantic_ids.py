"""Semantic ids as TIGER builds them (Rajput et al. 2023, "Recommender Systems with Generative Retrieval"): an RQ-VAE
over item embeddings gives each item `n_levels` coarse-to-fine codes, and items whose codes coincide get one more
level, 0..n-1, so every item has a unique id.

The input is the item's text embedding, or (with `cf_dim > 0`) the text fused with its collaborative vector exactly
as `ItemTokenizer.fuse` does (items without interactions get their CF part predicted from text). An MLP encoder maps
it to a `latent_dim` vector, the core `ResidualVQ` (vector-quantize-pytorch, k-means initialised EMA codebooks)
quantizes it in `n_levels` residual steps, and an MLP decoder reconstructs the input; loss = reconstruction
(`item_tokens.reconstruction_loss`) + commitment. The frozen table, the disambiguation level, `add_items` /
`keep_items` and the code-usage report (`table_stats`) come from `ItemCodes`, so RecGPT takes these codes through
the same interface as the FSQ chunk codes: `RecGPTConfig(tokenizer=SemanticIdConfig(...))`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gentok.checkpoint import PretrainedMixin, register
from gentok.config import config
from gentok.quantizers import ResidualVQ, ResidualVQConfig
from recsys.item_tokens import ItemCodes, ItemTokenizer, ItemTokenizerConfig, ItemTokenizerOutput, \
    reconstruction_loss


@config
class SemanticIdConfig:
    embed_dim: int = 384  # width of the text embedding (all-MiniLM-L6-v2)
    n_levels: int = 3  # residual levels before the disambiguation level (TIGER: 3 x 256 codes)
    codebook_size: int = 256
    latent_dim: int = 32  # RQ-VAE latent width (TIGER: 32)
    hidden: int = 256  # encoder/decoder MLP width (two hidden layers each)
    commitment_weight: float = 0.25
    decay: float = 0.99  # EMA decay of the codebooks
    # restart codes whose EMA hit count per batch falls below this (0: never; a batch of 256 items over 256 codes hits
    # each code about once on average). Chosen on the tokenizer's own training data (demo catalog, text, 300 steps):
    # 0 leaves 72% of codes dead (usage 0.25/0.28/0.31, 11.0% of items need an extra index, cosine 0.79); 0.5 uses
    # 1.00/1.00/1.00, 0.5% need one, cosine 0.81
    dead_code_threshold: float = 0.5
    max_suffix: int = 256  # most items allowed to share the same codes (the disambiguation level's vocabulary)
    num_items: int = 0  # rows of the frozen table (set by build_table / add_items)
    cf_dim: int = 0  # width of the collaborative item vectors fused with the text; 0: ids from text alone
    cf_weight: float = 1.0  # scale of the normalised CF vector in the input, and weight of its reconstruction loss

    def __post_init__(self):
        if min(self.embed_dim, self.n_levels, self.latent_dim, self.hidden, self.max_suffix) < 1:
            raise ValueError("embed_dim, n_levels, latent_dim, hidden and max_suffix must be >= 1")
        if self.codebook_size < 2 or self.num_items < 0 or self.cf_dim < 0 or not self.cf_weight > 0:
            raise ValueError(f"codebook_size must be >= 2, num_items and cf_dim >= 0, cf_weight > 0; got "
                             f"{self.codebook_size}, {self.num_items}, {self.cf_dim}, {self.cf_weight}")
        if self.commitment_weight < 0 or not 0 < self.decay < 1 or self.dead_code_threshold < 0:
            raise ValueError("commitment_weight and dead_code_threshold must be >= 0 and decay in (0, 1)")

    @classmethod
    def tiny(cls, embed_dim: int = 24, cf_dim: int = 0):
        return cls(embed_dim=embed_dim, n_levels=3, codebook_size=8, latent_dim=8, hidden=32, max_suffix=64,
                   cf_dim=cf_dim)

    @property
    def input_dim(self) -> int:
        """Width of the vectors the RQ-VAE trains on (`SemanticIds.fuse`): text, then the CF part."""
        return self.embed_dim + self.cf_dim

    @property
    def prefix_length(self) -> int:
        """Codes per item before the disambiguation level."""
        return self.n_levels


def mlp(widths: list[int], norm_input: bool = False) -> nn.Sequential:
    """Linear layers of `widths` with GELU between them (and a LayerNorm on the input)."""
    layers: list[nn.Module] = [nn.LayerNorm(widths[0])] if norm_input else []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Linear(a, b)] + ([nn.GELU()] if i < len(widths) - 2 else [])
    return nn.Sequential(*layers)


@register("recsys.semantic_ids")
class SemanticIds(PretrainedMixin, ItemCodes):
    """RQ-VAE semantic ids with TIGER's disambiguation level; the table interface of `ItemCodes`."""

    config_class = SemanticIdConfig

    def __init__(self, config: SemanticIdConfig):
        super().__init__()
        self.config = c = config
        self.encoder = mlp([c.input_dim, c.hidden, c.hidden, c.latent_dim], norm_input=True)
        self.rq = ResidualVQ(ResidualVQConfig(
            dim=c.latent_dim, num_quantizers=c.n_levels, codebook_size=c.codebook_size, cosine=False,
            kmeans_init=True, decay=c.decay, dead_code_threshold=c.dead_code_threshold,
            commitment_weight=c.commitment_weight))
        self.decoder = mlp([c.latent_dim, c.hidden, c.hidden, c.input_dim])
        self._init_table()

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def prefix_vocab(self) -> list[int]:
        return [self.config.codebook_size] * self.config.n_levels

    def forward(self, x: Tensor) -> ItemTokenizerOutput:
        """Reconstruct `x` (b, input_dim) (text embeddings, or `fuse` outputs when `cf_dim > 0`) through the residual
        quantizer; loss = reconstruction + commitment. Codes (b, n_levels)."""
        self._check(x, self.config.input_dim, "tokenizer inputs")
        q = self.rq(self.encoder(x)[:, None])  # one latent per item: (b, 1, latent_dim)
        recon = self.decoder(q.quantized[:, 0])
        loss, metrics = reconstruction_loss(recon, x, self.config.embed_dim, self.config.cf_weight)
        return ItemTokenizerOutput(recon, q.indices[:, 0], loss + q.loss,
                                   {**metrics, "commitment": q.loss.detach(), **q.metrics})

    @torch.no_grad()
    def encode(self, emb: Tensor, cf: Tensor | None = None, has_cf: Tensor | None = None) -> Tensor:
        """Residual codes (b, n_levels) of text embeddings (b, embed_dim), without the disambiguation level; with
        `cf_dim > 0` fused with CF vectors `cf` (b, cf_dim) where given (see `fuse`), else with predicted ones."""
        was = self.training
        self.eval()
        try:
            return self.rq.encode(self.encoder(self.fuse(emb, cf, has_cf))[:, None])[:, 0]
        finally:
            self.train(was)

    def codewords(self, codes: Tensor) -> Tensor:
        """The codebook vector each level's code selects: codes (b, n_levels) -> (b, n_levels, latent_dim); their sum
        is the quantized latent the decoder reconstructs from."""
        if codes.ndim != 2 or codes.shape[1] != self.config.n_levels:
            raise ValueError(f"expected codes (b, {self.config.n_levels}), got {tuple(codes.shape)}")
        return torch.stack([layer.get_output_from_indices(codes[:, i])
                            for i, layer in enumerate(self.rq.rvq.layers)], 1)


# the item tokenizer class of each config (RecGPT and `recsys.train.train_item_tokenizer` build from a config)
ITEM_TOKENIZERS: dict[type, type] = {ItemTokenizerConfig: ItemTokenizer, SemanticIdConfig: SemanticIds}


def item_tokenizer_class(cfg) -> type:
    """The item tokenizer class a config builds (`ItemTokenizer` for FSQ chunk codes, `SemanticIds` for RQ-VAE)."""
    cls = ITEM_TOKENIZERS.get(type(cfg))
    if cls is None:
        raise ValueError(f"no item tokenizer for {type(cfg).__name__}; known: "
                         f"{sorted(c.__name__ for c in ITEM_TOKENIZERS)}")
    return cls


def build_item_tokenizer(cfg) -> ItemCodes:
    return item_tokenizer_class(cfg)(cfg)
