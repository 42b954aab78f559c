"""The tokenizer contract, one for every family (images, audio, DNA, pretrained adapters).

    tokens = tok.encode(x, **options)        # -> Tokens (gentok/tokenizers/tokens.py)
    x_hat = tok.decode(tokens, **options)    # Tokens, or bare ids in the Tokens layout
    out = tok(x)                             # training: TokenizerOutput(recon, ids, loss, metrics)

- `Tokens.ids` is int64 `(b, n)` for one codebook or `(b, n, q)` for q codebooks per position, with `PAD_ID` (-1)
  past each item's `lengths`; `decode` also takes bare ids in that layout (padding marks the lengths).
- Family options are keyword arguments with defaults (audio: `sample_rate` defaults to the model's own rate and
  `n_quantizers` to all levels; FlexTok: `steps`, `guidance`, `seed`; MergeDNA: `tokens_per_window`).
- `vocab_size` is the number of ids of one codebook; `num_codebooks` is q at full depth; `bits_per_token =
  num_codebooks x log2(vocab_size)`; an item's bits are `Tokens.bits_per_item`.
- A VAE tokenizer (continuous tokens) returns `Latents` (float `(b, n, d)`) from `encode` and takes them (or a
  float tensor in that layout) in `decode`; its `vocab_size`, `bits_per_code` and `bits_per_token` are None, and
  `as_tokens` refuses its latents with a `ValueError`, so code that needs ids fails with a message, not garbage.
- Every tokenizer validates its input and raises a `ValueError` naming the problem: wrong shape, dtype or range,
  NaN, empty input, ids outside the vocabulary.

For the CLI (`gentok encode/decode`) a tokenizer also turns files into a batch and back: `read_assets(paths)` /
`write_assets(x, out_dir, names)`, and `encode_files(paths) -> Tokens` / `decode_to_files(tokens, out_dir, names)`
which families override when a file needs more than its ids to come back (an audio file's rate and length, FASTA
headers); they put that in `Tokens.extras`. The CLI never asks what kind of tokenizer it holds.

Optional capabilities are declared here with their defaults and overridden by the families that have them, so
evaluation and the CLI read them without probing: `decodes_prefixes` (every prefix `ids[:, :k]` decodes: FlexTok),
`default_decode_options` (the options `decode` uses when not given), `has_bits` / `to_bits` (ids that are packed bit
vectors: the binary tokenizer), `bits_summary(tokens)` (the bit counts the CLI prints; audio adds bits per second,
DNA bits per base), `earlier_types` (type names older gentok versions saved the model under: token files they wrote
still decode with it).
"""

from __future__ import annotations

import abc
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from gentok.checkpoint import PretrainedMixin
from gentok.tokenizers.tokens import Latents, Tokens
from gentok.validate import PAD_ID, check_ids


@dataclass
class TokenizerOutput:
    recon: Tensor  # reconstruction, same layout as the input
    ids: Tensor  # token ids, the layout of Tokens.ids (a VAE tokenizer: its sampled latents (b, n, d))
    loss: Tensor  # scalar training loss (reconstruction + quantizer terms)
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Tokenizer(PretrainedMixin, nn.Module, metaclass=abc.ABCMeta):
    """Base class of all tokenizers; see the module docstring."""

    decodes_prefixes: bool = False  # True: every prefix ids[:, :k], 1 <= k <= n, decodes (evaluation reports per k)
    has_bits: bool = False  # True: ids are packed bit vectors and `to_bits` unpacks them
    earlier_types: tuple[str, ...] = ()  # type names this model was saved under before (token files name their type)

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int | None:
        """Number of distinct ids of one codebook; None for continuous tokens (`Latents`)."""

    @property
    def num_codebooks(self) -> int:
        """q: ids per token position at full depth (1 unless residual)."""
        return 1

    @property
    def bits_per_code(self) -> float | None:
        return None if self.vocab_size is None else math.log2(self.vocab_size)

    @property
    def bits_per_token(self) -> float | None:
        """Bits of one token position at full depth (None for continuous tokens)."""
        return None if self.bits_per_code is None else self.num_codebooks * self.bits_per_code

    @property
    def tokens_per_item(self) -> int | None:
        """Positions per item for fixed-length families (images); None where it depends on the input."""
        return None

    @property
    def default_decode_options(self) -> dict:
        """The keyword options `decode` uses when they are not given (reported beside evaluation results)."""
        return {}

    def to_bits(self, tokens) -> Tensor:
        """`Tokens` or ids -> their bits (b, n, B) uint8, for tokenizers whose ids are bit vectors (`has_bits`)."""
        raise NotImplementedError(f"{type(self).__name__} has no bit view of its ids (has_bits is False); only "
                                  "tokenizers whose ids pack bit vectors (e.g. BinaryTokenizer) offer to_bits")

    def bits_summary(self, tokens: Tokens) -> str:
        """The bit counts of a batch of this tokenizer's `Tokens`, each named by its unit (for the CLI)."""
        return (f"{tokens.bits_per_token:g} bits per token, {float(tokens.bits_per_item.mean()):,.0f} bits per file "
                "(mean)")

    @abc.abstractmethod
    def encode(self, x, **options) -> Tokens:
        """Assets -> `Tokens`."""

    @abc.abstractmethod
    def decode(self, tokens, **options):
        """`Tokens` (or ids in its layout) -> assets."""

    # -- files, for the CLI ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def read_assets(self, paths: list[str | os.PathLike]):
        """Files -> the batch `encode` takes."""

    @abc.abstractmethod
    def write_assets(self, x, out_dir: str | os.PathLike, names: list[str]) -> list[Path]:
        """A decoded batch -> files named after `names` in `out_dir`."""

    def encode_files(self, paths: list[str | os.PathLike], **options) -> Tokens:
        """Tokens of these files, with whatever `decode_to_files` needs to write them back."""
        return self.encode(self.read_assets(paths), **options)

    def decode_to_files(self, tokens: Tokens, out_dir: str | os.PathLike, names: list[str], **options) -> list[Path]:
        return self.write_assets(self.decode(tokens, **options), out_dir, names)

    # -- shared helpers -------------------------------------------------------------------------------------------
    def make_tokens(self, ids: Tensor, lengths: Tensor | None = None, extras: dict | None = None, **meta) -> Tokens:
        """`Tokens` of this tokenizer: fills `bits_per_code` (and family `meta`)."""
        return Tokens(ids, lengths, {"bits_per_code": self.bits_per_code, **meta}, dict(extras or {}))

    def as_tokens(self, tokens, length: int | None = None, what: str = "ids") -> Tokens:
        """Validate `Tokens` or bare ids against this tokenizer; return `Tokens` on the model's device.

        Checks: integer dtype; `(b, n)` (or `(b, n, q)` with `q <= num_codebooks` when `num_codebooks > 1`); for a
        fixed-length family (`length` given) `n == length` and no padding; ids in [0, vocab_size) on real positions and `PAD_ID` exactly on padding (a whole
        position, only after the real ones). Bare ids get their lengths from where the padding starts.
        """
        if isinstance(tokens, Latents):
            raise ValueError(f"expected {what} (Tokens or an integer tensor), got continuous Latents "
                             f"{tuple(tokens.values.shape)}: they come from a VAE tokenizer and have no ids")
        if isinstance(tokens, Tokens):
            ids, lengths = tokens.ids, tokens.lengths
        else:
            ids, lengths = tokens, None
        q = self.num_codebooks
        shape = (None, length) if q == 1 else (None, length, None)
        ids = check_ids(ids, self.vocab_size, shape, what, pad=PAD_ID)
        if q > 1 and not 1 <= ids.shape[2] <= q:
            raise ValueError(f"expected {what} of shape (b, n, q) with 1 <= q <= {q}, got {tuple(ids.shape)}")
        if ids.shape[0] == 0 or ids.shape[1] == 0:
            raise ValueError(f"expected a non-empty batch of {what}, got shape {tuple(ids.shape)}")
        pos_pad = ids < 0 if q == 1 else (ids < 0).all(-1)
        if q > 1 and bool(((ids < 0).any(-1) & ~pos_pad).any()):
            raise ValueError(f"{what}: {PAD_ID} marks a whole padding position; a position may not mix it with ids")
        found = (~pos_pad).sum(1)
        if lengths is None:
            lengths = found
        else:
            lengths = torch.as_tensor(lengths).long().to(ids.device)
        prefix = torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None]
        if not torch.equal(prefix, ~pos_pad):
            raise ValueError(f"{what}: padding ({PAD_ID}) must fill exactly the positions past each item's length")
        if length is not None and bool((lengths != length).any()):
            raise ValueError(f"{what}: this tokenizer is fixed-length; every item needs {length} ids, no padding")
        meta = tokens.meta if isinstance(tokens, Tokens) else {"bits_per_code": self.bits_per_code}
        extras = tokens.extras if isinstance(tokens, Tokens) else {}
        return Tokens(ids, lengths, meta, extras).to(self._device())

    def as_prefix_tokens(self, tokens, max_length: int, what: str = "ids") -> Tokens:
        """`as_tokens` for a tokenizer that decodes prefixes (`decodes_prefixes`): every item keeps its first
        1..max_length ids, so ids are (b, k) with k <= max_length and every length >= 1."""
        t = self.as_tokens(tokens, what=what)
        if t.ids.shape[1] > max_length or int(t.lengths.min()) < 1:
            raise ValueError(f"expected {what} of shape (b, k) with 1 <= k <= {max_length} real ids per item, got "
                             f"shape {tuple(t.ids.shape)} with lengths in [{int(t.lengths.min())}, "
                             f"{int(t.lengths.max())}]")
        return t

    def as_latents(self, latents, length: int, dim: int) -> Latents:
        """Validate `Latents` or a float tensor (b, length, dim) against this tokenizer; return `Latents` on its device.

        Checks: floating dtype, finite values, shape (b, length, dim) with b >= 1; integer ids are refused with a
        message saying this tokenizer's tokens are continuous.
        """
        if isinstance(latents, Tokens) or (isinstance(latents, Tensor) and not latents.dtype.is_floating_point):
            raise ValueError("this tokenizer's tokens are continuous (a VAE): decode takes Latents or a float tensor "
                             f"(b, {length}, {dim}), not integer ids")
        if not isinstance(latents, Latents):
            latents = Latents(latents)
        v = latents.values
        if v.shape[0] == 0 or v.shape[1:] != (length, dim):
            raise ValueError(f"expected latents of shape (b, {length}, {dim}) with b >= 1, got {tuple(v.shape)}")
        return latents.to(self._device())

    def check_ids(self, ids: Tensor, shape_tail: tuple[int, ...], what: str = "ids") -> Tensor:
        """Integer ids (b, *shape_tail) in [0, vocab_size), as int64; raises `ValueError` otherwise."""
        return check_ids(ids, self.vocab_size, (None, *shape_tail), what)

    def _device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")
