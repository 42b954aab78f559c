"""MergeDNA: "Context-aware Genome Modeling with Dynamic Tokenization through Token Merging" (Li et al. 2025).

A local encoder alternates window attention with adjacent-token merging (`merging.py`), so each window of bases
becomes a few variable-length tokens whose boundaries the model learns; a latent encoder attends over all merged
tokens; a latent decoder and a local decoder undo it: every token's vector is copied back to the bases it covers
(unmerge through the source matrix) and a window-attention stack predicts each base. Optionally a core quantizer
turns each merged token into a discrete code; a token id is `code * window + (length - 1)`, so a genome becomes a
variable-length id sequence that decodes back to bases with no side information.

Training terms (one `forward`): merged-token reconstruction with the tokens per window sampled per step; a latent
term that merges the (detached) local tokens globally and reconstructs through the same decoders, so it trains the
latent encoder and decoders but never the local encoder; adaptive masked-token modelling (tokens masked with
probability proportional to 1 / length, loss on their bases).

The contract (`tokenizers/base.py`): `encode(sequences, tokens_per_window=None) -> Tokens` with ids (b, L), one
row per sequence, `PAD_ID` past each row's `lengths`, and `meta["window"]`; `dna/tokens.py` reads each token's base
span off it. `decode(tokens_or_ids) -> list[str]`, one uppercase A/C/G/T string per row: a base string is the asset
type of the FASTA world the users work in (and what `encode` takes back), and rows differ in length, so a padded
code tensor would only move the unpadding to every caller. Case and N runs are not in the ids; the FASTA path
(`assets.py`) keeps them beside the tokens. Bits: `bits_per_token = log2(vocab_size)` from the base class; a
sequence costs `bits_per_token x tokens / bases` bits per base (`dna.tokens.bits_per_base`), about
`bits_per_token x tokens_per_window / window` on full windows.
"""

from __future__ import annotations


import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from gentok.checkpoint import register
from gentok.config import config
from gentok.losses.dna import adaptive_token_mask, base_cross_entropy, base_targets, mask_bases
from gentok.nn import Block, Transformer, init_weights, sincos_positions
from gentok.quantizers import FSQConfig, QuantizerConfig, build_quantizer
from gentok.tokenizers.base import Tokenizer, TokenizerOutput
from gentok.tokenizers.dna.assets import DNAAssetsMixin, to_records
from gentok.tokenizers.dna.fasta import NUM_CLASSES, NUM_INPUT_SYMBOLS, PAD, to_tensor
from gentok.tokenizers.dna.merging import (
    bipartite_merge,
    global_merge,
    lengths_to_assignment,
    merge_schedule,
    min_tokens,
    offsets_in_token,
    unmerge,
)
from gentok.tokenizers.tokens import Tokens
from gentok.validate import PAD_ID


@config
class MergeDNAConfig:
    seq_len: int = 1024  # bases per chunk; the latent transformer attends within a chunk
    window: int = 16  # local window in bases: merges never cross it, and it bounds a token's length
    dim: int = 256
    heads: int = 4
    local_depth: int = 3  # local encoder: window attention + one merge step per layer
    latent_depth: int = 4
    latent_dec_depth: int = 2
    local_dec_depth: int = 2
    mlp_ratio: float = 4.0
    tokens_per_window: int = 4  # at encode time: 4 bases per token on average
    train_tokens: tuple[int, int] = (2, 8)  # tokens per window sampled per training step (inclusive range)
    latent_ratio: float = 0.5  # the latent term keeps this fraction of the local tokens after global merging
    latent_weight: float = 0.5
    mask_ratio: float = 0.15  # fraction of tokens masked by adaptive masked-token modelling
    mask_weight: float = 1.0
    quantizer: QuantizerConfig | None = FSQConfig(dim=4, levels=(8, 5, 5, 5))  # None: continuous tokens only

    def __post_init__(self):
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.window < 2 or self.seq_len % self.window:
            raise ValueError(f"seq_len {self.seq_len} must be a multiple of window {self.window} (>= 2)")
        lo = min_tokens(self.window, self.local_depth)
        lo_t, hi_t = self.train_tokens
        for name, t in (("tokens_per_window", self.tokens_per_window), ("train_tokens", lo_t), ("train_tokens", hi_t)):
            if not lo <= t <= self.window:
                raise ValueError(f"{name} {t} must lie in [{lo}, {self.window}] for window {self.window} with "
                                 f"{self.local_depth} merge layers")
        if lo_t > hi_t:
            raise ValueError(f"train_tokens must be (low, high) with low <= high, got {self.train_tokens}")
        if not 0.0 < self.latent_ratio <= 1.0 or not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError("latent_ratio must lie in (0, 1] and mask_ratio in [0, 1)")
        if min(self.latent_depth, self.latent_dec_depth, self.local_dec_depth) < 1 or self.local_depth < 0:
            raise ValueError("depths must be >= 1 (local_depth >= 0)")


PRESETS = {
    # unit tests: trains in seconds
    "tiny": MergeDNAConfig(seq_len=64, window=8, dim=32, heads=2, local_depth=2, latent_depth=1, latent_dec_depth=1,
                           local_dec_depth=1, tokens_per_window=4, train_tokens=(2, 8), mlp_ratio=2.0,
                           quantizer=FSQConfig(dim=4, levels=(8, 5, 5, 5))),
    # the CPU recipe default (~10 minutes on 2 cores): 256-base chunks, narrow and shallow
    "cpu": MergeDNAConfig(seq_len=256, window=16, dim=64, heads=4, local_depth=3, latent_depth=2,
                          latent_dec_depth=2, local_dec_depth=2, mlp_ratio=2.0, tokens_per_window=4,
                          train_tokens=(2, 8)),
    # the paper's scale (GPU): 4096-base chunks
    "base": MergeDNAConfig(seq_len=4096, window=16, dim=512, heads=8, local_depth=4, latent_depth=12,
                           latent_dec_depth=4, local_dec_depth=2, tokens_per_window=4, train_tokens=(2, 8)),
}


def _key_mask(valid: Tensor) -> Tensor | None:
    """(B, t) bool -> SDPA mask (B, 1, t, t) where nobody attends to invalid keys (each query keeps itself)."""
    if bool(valid.all()):
        return None
    eye = torch.eye(valid.shape[1], dtype=torch.bool, device=valid.device)
    return valid[:, None, None, :] | eye


@register("mergedna")
class MergeDNA(DNAAssetsMixin, Tokenizer):
    config_class = MergeDNAConfig

    def __init__(self, config: MergeDNAConfig):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(NUM_INPUT_SYMBOLS, c.dim)
        # positions go a window past seq_len: decoded ids from a generator may overrun a chunk by one token
        self.register_buffer("positions", sincos_positions(c.seq_len + c.window, c.dim), persistent=False)
        self.local_blocks = nn.ModuleList(Block(c.dim, c.heads, c.mlp_ratio) for _ in range(c.local_depth))
        self.local_norm = nn.LayerNorm(c.dim)
        self.latent_encoder = Transformer(c.dim, c.latent_depth, c.heads, c.mlp_ratio)
        if c.quantizer is not None:
            self.to_code = nn.Linear(c.dim, c.quantizer.dim)
            self.quantizer = build_quantizer(c.quantizer)
            self.from_code = nn.Linear(c.quantizer.dim, c.dim)
        else:
            self.quantizer = None
        # a decoded token knows its length and start; each unmerged base knows its offset inside its token
        self.length_embed = nn.Embedding(c.seq_len + c.window + 1, c.dim)
        self.offset_embed = nn.Embedding(c.seq_len + c.window + 1, c.dim)
        self.latent_decoder = Transformer(c.dim, c.latent_dec_depth, c.heads, c.mlp_ratio)
        self.local_decoder = Transformer(c.dim, c.local_dec_depth, c.heads, c.mlp_ratio)
        self.head = nn.Linear(c.dim, NUM_CLASSES)
        init_weights(self)

    # -- contract -------------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        if self.quantizer is None:
            raise ValueError("this MergeDNA has no quantizer (config.quantizer=None), so it has no token vocabulary")
        return self.quantizer.codebook_size * self.config.window

    def forward(self, bases: Tensor, tokens_per_window: int | None = None) -> TokenizerOutput:
        """Training pass on base codes (b, n), n a multiple of `window` and <= `seq_len` (A C G T N = 0..4).

        The tokens per window are sampled from `config.train_tokens` in training mode unless given."""
        c = self.config
        bases = self._check_bases(bases)
        t = tokens_per_window or (int(torch.randint(c.train_tokens[0], c.train_tokens[1] + 1, ()))
                                  if self.training else c.tokens_per_window)
        n = bases.shape[1]
        targets = base_targets(bases)
        tokens, lengths = self.local_encode(bases, t)
        # 1) merged-token reconstruction
        code, ids, q_loss, q_metrics = self._quantize(self.latent_encoder(tokens))
        logits = self.decode_tokens(code, lengths, n)
        recon, recon_acc = base_cross_entropy(logits, targets)
        loss = recon + q_loss
        metrics = {"recon_loss": recon.detach(), "recon_acc": recon_acc,
                   "bases_per_token": lengths.float().mean(), **{f"code_{k}": v for k, v in q_metrics.items()}}
        # 2) latent reconstruction after global merging; the local encoder's output is detached
        if c.latent_weight > 0:
            lat_loss, lat_acc, lat_q = self.latent_loss(tokens.detach(), lengths, targets)
            loss = loss + c.latent_weight * lat_loss + lat_q
            metrics.update(latent_loss=lat_loss.detach(), latent_acc=lat_acc)
        # 3) adaptive masked-token modelling
        count = round(c.mask_ratio * lengths.shape[1])
        if c.mask_weight > 0 and count > 0:
            token_mask = adaptive_token_mask(lengths, count)
            masked, base_mask = mask_bases(bases, token_mask, lengths_to_assignment(lengths, n))
            mlm, mlm_acc = base_cross_entropy(self._predict(masked, t), targets, where=base_mask)
            loss = loss + c.mask_weight * mlm
            metrics.update(mask_loss=mlm.detach(), mask_acc=mlm_acc)
        return TokenizerOutput(recon=logits, ids=ids * c.window + lengths - 1 if ids is not None else lengths,
                               loss=loss, metrics=metrics)

    def latent_loss(self, tokens: Tensor, lengths: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Latent term: latent-encode `tokens` (b, L, d), merge globally to `latent_ratio * L` tokens, quantize,
        decode, cross entropy. Returns (loss, accuracy, quantizer loss)."""
        b, L, _ = tokens.shape
        z = self.latent_encoder(tokens)
        eye = torch.eye(L, device=z.device, dtype=z.dtype).expand(b, L, L).contiguous()
        target = max(1, round(self.config.latent_ratio * L))
        z, sizes, _ = global_merge(z, z, lengths.to(z.dtype), eye, target)
        code, _, q_loss, _ = self._quantize(z)
        logits = self.decode_tokens(code, sizes.round().long(), targets.shape[1])
        loss, acc = base_cross_entropy(logits, targets)
        return loss, acc, q_loss

    @torch.no_grad()
    def predict(self, bases: Tensor, tokens_per_window: int | None = None) -> Tensor:
        """Logits (b, n, 4) for every base of `bases` (b, n) (MASK = 5 marks bases to fill in)."""
        return self._predict(bases, tokens_per_window)

    # -- building blocks (shapes in docstrings) -------------------------------------------------------------------
    def local_encode(self, bases: Tensor, tokens_per_window: int) -> tuple[Tensor, Tensor]:
        """Base codes (b, n) -> merged tokens (b, nw * t, d) and their real lengths (b, nw * t) (0 for padding)."""
        tokens, lengths, _ = self._local_encode(bases, tokens_per_window)
        return tokens, lengths

    def _local_encode(self, bases: Tensor, t: int, with_source: bool = False):
        """Base codes (b, n) -> (tokens (b, nw * t, d), lengths (b, nw * t), source (b * nw, t, window) or None).

        Every window is one row of a (b * nw)-row batch, so all windows of all sequences merge in the same tensor
        operations. The merge keys are the keys each block's attention computed anyway (`return_kv`). Without
        `with_source` a token carries its count of real bases, a (b * nw, t, 1) column, instead of the 0/1 source
        matrix: merging adds both the same way, so lengths and padding fractions are the same numbers."""
        c = self.config
        b, n = bases.shape
        nw, w = n // c.window, c.window
        x = (self.embed(bases) + self.positions[:n]).view(b * nw, w, c.dim)
        real_base = (bases != PAD).to(x.dtype).view(b * nw, w, 1)
        has_pad = not bool(real_base.all())
        sizes = torch.ones(b * nw, w, device=x.device)
        source = torch.eye(w, device=x.device).expand(b * nw, w, w).contiguous() if with_source else real_base

        def real_counts(src):  # (B, t) real bases per token
            return (src @ real_base if with_source else src).squeeze(-1)

        for block, r in zip(self.local_blocks, merge_schedule(w, t, c.local_depth)):
            real = real_counts(source) / sizes if has_pad else None
            mask = _key_mask(real > 0) if has_pad else None
            x, (keys, _) = block(x, mask=mask, return_kv=True)  # ToMe: merge on the attention keys
            keys = rearrange(keys, "B h t e -> B t (h e)")
            x, sizes, source = bipartite_merge(x, keys, sizes, source, r, real)
        if x.shape[1] != t:  # local_depth == 0 or no merge layers: nothing merged
            raise ValueError(f"local encoder produced {x.shape[1]} tokens per window, expected {t}")
        lengths = real_counts(source).round().long()
        return self.local_norm(x).view(b, nw * t, c.dim), lengths.view(b, nw * t), source if with_source else None

    def _quantize(self, z: Tensor):
        """Latent tokens (b, L, d) -> (decoder input (b, L, d), codes (b, L) or None, loss, metrics)."""
        if self.quantizer is None:
            return z, None, z.new_zeros(()), {}
        q = self.quantizer(self.to_code(z))
        return self.from_code(q.quantized), q.indices, q.loss, q.metrics

    def decode_tokens(self, tokens: Tensor, lengths: Tensor, n: int) -> Tensor:
        """Token vectors (b, L, d) covering `lengths` (b, L) bases (0 = padding token) -> base logits (b, n, 4).

        `n` is padded up to a multiple of the window; bases past a row's total length are padding."""
        c = self.config
        b, L, _ = tokens.shape
        n_pad = -(-n // c.window) * c.window
        limit = self.length_embed.num_embeddings - 1
        starts = (lengths.cumsum(-1) - lengths).clamp_max(self.positions.shape[0] - 1)
        h = tokens + self.length_embed(lengths.clamp_max(limit)) + self.positions[starts]
        h = self.latent_decoder(h, mask=_key_mask(lengths > 0))
        assign = lengths_to_assignment(lengths, n_pad)
        offsets = offsets_in_token(lengths, assign).clamp(0, limit)
        hb = unmerge(h, assign) + self.positions[:n_pad] + self.offset_embed(offsets)
        real = torch.arange(n_pad, device=hb.device) < lengths.sum(-1, keepdim=True)  # (b, n_pad)
        nw = n_pad // c.window
        hb = self.local_decoder(hb.reshape(b * nw, c.window, c.dim), mask=_key_mask(real.view(b * nw, c.window)))
        return self.head(hb).view(b, n_pad, NUM_CLASSES)[:, :n]

    def _predict(self, bases, tokens_per_window=None):
        t = tokens_per_window or self.config.tokens_per_window
        tokens, lengths = self.local_encode(bases, t)
        code, _, _, _ = self._quantize(self.latent_encoder(tokens, mask=_key_mask(lengths > 0)))
        return self.decode_tokens(code, lengths, bases.shape[1])

    def _check_bases(self, bases: Tensor) -> Tensor:
        c = self.config
        if not isinstance(bases, Tensor) or bases.dtype.is_floating_point or bases.ndim != 2:
            raise ValueError(f"expected integer base codes of shape (b, n), got {getattr(bases, 'dtype', type(bases))}"
                             f" {tuple(getattr(bases, 'shape', ()))}")
        n = bases.shape[1]
        if n == 0 or n % c.window or n > c.seq_len:
            raise ValueError(f"expected a length that is a multiple of window {c.window} and at most seq_len "
                             f"{c.seq_len}, got {n}")
        if bases.numel() and (int(bases.min()) < 0 or int(bases.max()) >= NUM_INPUT_SYMBOLS):
            raise ValueError(f"base codes must lie in [0, {NUM_INPUT_SYMBOLS}), got [{int(bases.min())}, "
                             f"{int(bases.max())}]")
        return bases.long().to(self.embed.weight.device)

    # -- encode / decode ------------------------------------------------------------------------------------------
    def _tokens_per_window(self, tokens_per_window: int | None) -> int:
        c = self.config
        t = c.tokens_per_window if tokens_per_window is None else tokens_per_window
        lo = min_tokens(c.window, c.local_depth)
        if not isinstance(t, int) or isinstance(t, bool) or not lo <= t <= c.window:
            raise ValueError(f"tokens_per_window must be an integer in [{lo}, {c.window}] for window {c.window} "
                             f"with {c.local_depth} merge layers, got {t!r}")
        return t

    @torch.no_grad()
    def encode(self, x, tokens_per_window: int | None = None, batch_size: int = 64) -> Tokens:
        """Sequences -> `Tokens`: ids (b, L), one row per sequence, `PAD_ID` past each row's `lengths`.

        Args:
            x: a base string, FASTA text, a FASTA path (plain or gzipped), a `DNARecord`, or a list of these.
            tokens_per_window: tokens per `window` bases (default `config.tokens_per_window`); fewer = more
                compression from the same model.
            batch_size: `seq_len` chunks run through the model at once.
        Each sequence is cut into `seq_len` chunks (the last one padded; padding never becomes a token).
        Raises `ValueError` for characters other than A/C/G/T/N (IUPAC codes read as N) and empty input."""
        if self.quantizer is None:
            raise ValueError("this MergeDNA has no quantizer (config.quantizer=None): it has continuous tokens only")
        c = self.config
        t = self._tokens_per_window(tokens_per_window)
        _check_batch_size(batch_size)
        records = to_records(x)
        chunks, owner = _chunk(records, c.seq_len)
        device = self._device()
        ids, lengths = [], []
        for s in range(0, len(chunks), batch_size):
            bases = chunks[s:s + batch_size].to(device)
            tokens, length = self.local_encode(bases, t)
            z = self.latent_encoder(tokens, mask=_key_mask(length > 0))
            ids.append((self.quantizer.encode(self.to_code(z)) * c.window + (length - 1).clamp_min(0)).cpu())
            lengths.append(length.cpu())
        out = _join(torch.cat(ids), torch.cat(lengths) > 0, owner, len(records))
        return self.make_tokens(out.ids, out.lengths, window=c.window)

    @torch.no_grad()
    def decode(self, tokens, batch_size: int = 64) -> list[str]:
        """`Tokens` (or bare ids (b, L), `PAD_ID` past each row's end) -> one uppercase A/C/G/T string per row.

        Any id sequence decodes: each id carries its token's length, so row i gives `num_bases(tokens)[i]` bases.
        Raises `ValueError` for ids that are not integers, lie outside [0, vocab_size), or are padded wrongly, and for
        tokens of a model with another window."""
        c = self.config
        tokens = self.as_tokens(tokens)
        window = tokens.meta.get("window", c.window)
        if window != c.window:
            raise ValueError(f"these tokens were made with window {window}, this model's window is {c.window}")
        _check_batch_size(batch_size)
        device = self._device()
        # regroup every row into its seq_len chunks (a token belongs to the chunk where it starts)
        chunks, owner = [], []
        for i in range(len(tokens)):
            row = tokens.item(i).cpu()
            lengths = row % c.window + 1
            chunk_of = (lengths.cumsum(0) - lengths) // c.seq_len
            for k in torch.unique(chunk_of).tolist():
                sel = chunk_of == k
                chunks.append((row[sel] // c.window, lengths[sel]))
                owner.append(i)
        texts = [[] for _ in range(len(tokens))]
        for s in range(0, len(chunks), batch_size):
            part = chunks[s:s + batch_size]
            L = max(len(p[0]) for p in part)
            codes = torch.zeros(len(part), L, dtype=torch.long)
            lengths = torch.zeros(len(part), L, dtype=torch.long)
            for j, (cd, ln) in enumerate(part):
                codes[j, :len(cd)], lengths[j, :len(ln)] = cd, ln
            codes, lengths = codes.to(device), lengths.to(device)
            vec = self.from_code(self.quantizer.decode(codes))
            pred = self.decode_tokens(vec, lengths, int(lengths.sum(-1).max())).argmax(-1).cpu()
            for j, o in enumerate(owner[s:s + batch_size]):
                texts[o].append(pred[j, : int(lengths[j].sum())].numpy())
        letters = np.frombuffer(b"ACGT", np.uint8)
        return [letters[np.concatenate(p)].tobytes().decode() if p else "" for p in texts]


def _chunk(records, seq_len: int) -> tuple[Tensor, Tensor]:
    """Records -> (chunks (m, seq_len) of base codes, PAD past each record's end; owner (m,) record of each chunk),
    with one scatter rather than a loop over chunks."""
    codes = [to_tensor(rec.codes) for rec in records]
    sizes = torch.tensor([len(cd) for cd in codes])
    per_record = -(-sizes // seq_len)  # chunks per record
    owner = torch.repeat_interleave(torch.arange(len(codes)), per_record)
    record = torch.repeat_interleave(torch.arange(len(codes)), sizes)  # record of every base
    base_start = sizes.cumsum(0) - sizes
    chunk_start = (per_record.cumsum(0) - per_record) * seq_len
    dest = chunk_start[record] + torch.arange(int(sizes.sum())) - base_start[record]
    flat = torch.full((int(per_record.sum()) * seq_len,), PAD, dtype=torch.long)
    flat[dest] = torch.cat(codes)
    return flat.view(-1, seq_len), owner


def _join(ids: Tensor, real: Tensor, owner: Tensor, num_records: int) -> Tokens:
    """Per-chunk ids (m, L) with `real` (m, L) marking real tokens -> one `Tokens` row per record: its chunks'
    real tokens back to back, `PAD_ID` after them."""
    counts = torch.zeros(num_records, dtype=torch.long).index_add_(0, owner, real.sum(1))
    record = owner[:, None].expand_as(real)[real]  # record of every real token, in order
    position = torch.arange(len(record)) - (counts.cumsum(0) - counts)[record]
    out = torch.full((num_records, max(int(counts.max()), 1)), PAD_ID, dtype=torch.long)
    out[record, position] = ids[real]
    return Tokens(out, counts)


def _check_batch_size(batch_size) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
