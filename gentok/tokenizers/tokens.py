"""`Tokens`: what every tokenizer's `encode` returns and its `decode` takes, and the CLI's token file.

Layout, the same for every family:
- `ids` int64 `(b, n)` for one codebook, or `(b, n, q)` for q codebooks per position (residual levels of an audio
  frame): position first, codebook last, as everywhere in gentok's core (channel-last `(b, n, d)`).
- `lengths` int64 `(b,)`: real positions per item; positions `>= lengths[i]` hold `PAD_ID` (-1). Fixed-length
  families have `lengths == n` for every item.
- `meta`: JSON-able family facts (`bits_per_code`, and e.g. `sample_rate` for audio, `window` for DNA).
- `extras`: per-item side tensors (first dimension b) a family needs to rebuild its files, e.g. an audio file's
  original rate and length, a FASTA file's headers; zero-padded when batches are concatenated.

Bits: `bits_per_code` = log2(vocab) for one id; `bits_per_token` = bits_per_code x the codebooks kept (q); an
item's bits are `bits_per_token x lengths`. Those three are the only bit counts gentok reports; per-second or
per-base figures are derived from them with the unit named.

`Latents` are the continuous tokens of a VAE tokenizer (e.g. an official TiTok VAE): float `values` `(b, n, d)`,
fixed-length, with `meta` like `Tokens`; they have no ids and no bit count, and asking them for `ids` raises a
`ValueError`. They save to the same token-file format, marked `kind: latents` (`read_token_file` reads either).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from typing import Self

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open

from gentok.validate import PAD_ID

FILE_FORMAT = "gentok.tokens"
FILE_VERSION = 1
_EXTRA = "extra."


class _TokenFile:
    """`save` / `load` of the one token file format, for a class that gives `to_bytes(header)` and
    `load_with_header(path)`."""

    def save(self, path: str | os.PathLike, header: dict | None = None) -> None:
        """Write the file atomically (see `to_bytes`)."""
        from gentok.files import atomic_write_bytes

        atomic_write_bytes(path, self.to_bytes(header))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Self:
        """Read a file written by `save` (`load_with_header` also returns its header)."""
        return cls.load_with_header(path)[0]


@dataclass
class Tokens(_TokenFile):
    ids: torch.Tensor  # (b, n) or (b, n, q) int64, PAD_ID past each item's length
    lengths: torch.Tensor | None = None  # (b,) int64; None: every item has n positions
    meta: dict = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        ids = self.ids
        if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"Tokens.ids must be an integer tensor (continuous tokens belong in Latents), got "
                             f"{getattr(ids, 'dtype', type(ids).__name__)}")
        if ids.ndim not in (2, 3):
            raise ValueError(f"Tokens.ids must have shape (b, n) or (b, n, q), got {tuple(ids.shape)}")
        self.ids = ids.long()
        b, n = ids.shape[:2]
        if self.lengths is None:
            self.lengths = torch.full((b,), n, dtype=torch.long)
        lengths = torch.as_tensor(self.lengths)
        if lengths.dtype.is_floating_point or lengths.shape != (b,):
            raise ValueError(f"Tokens.lengths must be an integer tensor of shape ({b},), got {tuple(lengths.shape)}")
        if b and (int(lengths.min()) < 0 or int(lengths.max()) > n):
            raise ValueError(f"Tokens.lengths must lie in [0, {n}], got [{int(lengths.min())}, {int(lengths.max())}]")
        self.lengths = lengths.long().to(ids.device)
        for k, v in self.extras.items():
            if not isinstance(v, torch.Tensor) or v.ndim == 0 or v.shape[0] != b:
                raise ValueError(f"Tokens.extras[{k!r}] must be a tensor with first dimension {b}")

    # -- shape ---------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def num_codebooks(self) -> int:
        """q: ids per position (1 for a single codebook)."""
        return 1 if self.ids.ndim == 2 else self.ids.shape[2]

    @property
    def mask(self) -> torch.Tensor:
        """(b, n) bool: True on real positions."""
        return torch.arange(self.ids.shape[1], device=self.ids.device)[None] < self.lengths[:, None]

    def item(self, i: int) -> torch.Tensor:
        """The ids of item i without padding: (lengths[i],) or (lengths[i], q)."""
        return self.ids[i, : int(self.lengths[i])]

    # -- bits -----------------------------------------------------------------------------------------------------
    @property
    def bits_per_token(self) -> float:
        """Bits of one position: bits per code x codebooks kept."""
        return float(self.meta.get("bits_per_code", 0.0)) * self.num_codebooks

    @property
    def bits_per_item(self) -> torch.Tensor:
        """(b,) float: bits_per_token x real positions."""
        return self.lengths.double() * self.bits_per_token

    # -- batches --------------------------------------------------------------------------------------------------
    def __getitem__(self, index) -> Tokens:
        """Items `index` (an int, slice, list or index tensor) as a new `Tokens`, trimmed to their longest item."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        lengths = self.lengths[index]
        n = int(lengths.max()) if len(lengths) else 0
        return replace(self, ids=self.ids[index][:, :n], lengths=lengths,
                       extras={k: v[index] for k, v in self.extras.items()})

    def to(self, device) -> Tokens:
        return replace(self, ids=self.ids.to(device), lengths=self.lengths.to(device),
                       extras={k: v.to(device) for k, v in self.extras.items()})

    @classmethod
    def from_rows(cls, rows: list[torch.Tensor], meta: dict | None = None,
                  extras: dict[str, torch.Tensor] | None = None) -> Tokens:
        """A ragged batch from per-item ids, each (n_i,) or (n_i, q)."""
        if not rows:
            raise ValueError("Tokens.from_rows needs at least one row")
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        ids = pad_stack([r.long() for r in rows], PAD_ID)
        return cls(ids, lengths, dict(meta or {}), dict(extras or {}))

    @classmethod
    def cat(cls, parts: list[Tokens]) -> Tokens:
        """Concatenate batches along b; ids pad with PAD_ID, extras with 0, to the largest trailing shapes."""
        if not parts:
            raise ValueError("Tokens.cat needs at least one batch")
        first = parts[0]
        if any(p.ids.ndim != first.ids.ndim or set(p.extras) != set(first.extras) for p in parts):
            raise ValueError("Tokens.cat: batches differ in layout or extras")
        ids = _cat_padded([p.ids for p in parts], PAD_ID)
        extras = {k: _cat_padded([p.extras[k] for p in parts], 0) for k in first.extras}
        return cls(ids, torch.cat([p.lengths for p in parts]), dict(first.meta), extras)

    # -- files ----------------------------------------------------------------------------------------------------
    def to_bytes(self, header: dict | None = None) -> bytes:
        """The token file: safetensors with `ids`, `lengths`, `extra.<name>`; `meta` and `header` as JSON metadata."""
        tensors = {"ids": self.ids, "lengths": self.lengths, **{_EXTRA + k: v for k, v in self.extras.items()}}
        return _file_bytes(tensors, "ids", self.meta, header)

    @classmethod
    def load_with_header(cls, path: str | os.PathLike) -> tuple[Tokens, dict]:
        """Read a token file written by `save`; returns the tokens and the header (e.g. file names, model type)."""
        tensors, meta, header = _read_file(path, "ids")
        if "ids" not in tensors or "lengths" not in tensors:
            raise ValueError(f"{path}: token file has no 'ids'/'lengths' tensors (found {sorted(tensors)})")
        extras = {k[len(_EXTRA):]: v for k, v in tensors.items() if k.startswith(_EXTRA)}
        return cls(tensors["ids"], tensors["lengths"], meta, extras), header


@dataclass
class Latents(_TokenFile):
    """Continuous tokens: float `values` (b, n, d), n positions of d-dim vectors per item, every item all n.

    What a VAE tokenizer's `encode` returns and its `decode` takes. There is no vocabulary, so no ids and no bit
    count; code that needs ids gets a `ValueError` saying so (`Latents.ids`, `Tokenizer.as_tokens`).
    """

    values: torch.Tensor  # (b, n, d) float, finite
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        v = self.values
        if not isinstance(v, torch.Tensor) or not v.dtype.is_floating_point:
            raise ValueError(f"Latents.values must be a floating-point tensor (continuous tokens; integer ids belong "
                             f"in Tokens), got {getattr(v, 'dtype', type(v).__name__)}")
        if v.ndim != 3:
            raise ValueError(f"Latents.values must have shape (b, n, d), got {tuple(v.shape)}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError("Latents.values must be finite, found NaN or inf")

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def dim(self) -> int:
        """d: the width of one continuous token."""
        return self.values.shape[2]

    @property
    def ids(self):
        raise ValueError(f"these are continuous tokens (Latents {tuple(self.values.shape)}) from a VAE tokenizer: they "
                         "have no ids; use a tokenizer with a codebook (discrete ids) where ids are needed")

    def __getitem__(self, index) -> Latents:
        """Items `index` (an int, slice, list or index tensor) as a new `Latents`."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return replace(self, values=self.values[index])

    def to(self, device) -> Latents:
        return replace(self, values=self.values.to(device))

    @classmethod
    def cat(cls, parts: list[Latents]) -> Latents:
        """Concatenate batches along b (same n and d)."""
        if not parts:
            raise ValueError("Latents.cat needs at least one batch")
        if any(p.values.shape[1:] != parts[0].values.shape[1:] for p in parts):
            raise ValueError(f"Latents.cat: batches differ in shape {[tuple(p.values.shape) for p in parts]}")
        return cls(torch.cat([p.values for p in parts]), dict(parts[0].meta))

    def to_bytes(self, header: dict | None = None) -> bytes:
        """The token file with `values` instead of ids, marked `kind: latents`."""
        return _file_bytes({"values": self.values}, "latents", self.meta, header)

    @classmethod
    def load_with_header(cls, path: str | os.PathLike) -> tuple[Latents, dict]:
        """Read a latents file written by `save`; returns the latents and the header."""
        tensors, meta, header = _read_file(path, "latents")
        if "values" not in tensors:
            raise ValueError(f"{path}: latents file has no 'values' tensor (found {sorted(tensors)})")
        return cls(tensors["values"], meta), header


def read_token_file(path: str | os.PathLike) -> tuple[Tokens | Latents, dict]:
    """Read a token file of either kind: `Tokens` (ids) or `Latents` (continuous), and its header."""
    return (Latents if _file_kind(path) == "latents" else Tokens).load_with_header(path)


def _file_bytes(tensors: dict[str, torch.Tensor], kind: str, meta: dict, header: dict | None) -> bytes:
    from gentok.files import safetensors_bytes

    metadata = {"format": FILE_FORMAT, "format_version": str(FILE_VERSION), "kind": kind, "meta": json.dumps(meta),
                "header": json.dumps(header or {})}
    return safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata)


def _file_kind(path) -> str:
    try:
        with safe_open(os.fspath(path), "pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"cannot read token file {path}: {e}") from None
    return metadata.get("kind", "ids")  # files written before Latents existed hold ids


def _read_file(path, kind: str) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(tensors, meta, header) of a token file of `kind` ("ids" or "latents"); `ValueError` for anything else."""
    try:
        with safe_open(os.fspath(path), "pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"cannot read token file {path}: {e}") from None
    if metadata.get("format") != FILE_FORMAT:
        raise ValueError(f"{path} is not a gentok token file (written by gentok < 0.2 or another program); "
                         "encode the assets again with `gentok encode`")
    if metadata.get("format_version") != str(FILE_VERSION):
        raise ValueError(f"{path}: token file version {metadata.get('format_version')}, this gentok reads "
                         f"{FILE_VERSION}")
    found = metadata.get("kind", "ids")  # files written before Latents existed hold ids
    if found != kind:
        names = {"ids": "token ids (Tokens)", "latents": "continuous latents (Latents)"}
        raise ValueError(f"{path} holds {names.get(found, repr(found))}, not {names[kind]}; "
                         "read it with gentok.tokenizers.tokens.read_token_file")
    try:
        meta, header = json.loads(metadata.get("meta", "{}")), json.loads(metadata.get("header", "{}"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt token file metadata ({e})") from None
    return tensors, meta, header


def pad_stack(rows: list[torch.Tensor], fill: int, min_width: int = 0) -> torch.Tensor:
    """Stack (n_i, ...) tensors into (b, max n_i, ...) filled with `fill` past each row (at least `min_width` wide)."""
    width = max([len(r) for r in rows] + [min_width])
    out = torch.full((len(rows), width) + tuple(rows[0].shape[1:]), fill, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _cat_padded(chunks: list[torch.Tensor], fill: int) -> torch.Tensor:
    shape = [max(c.shape[d] for c in chunks) for d in range(1, chunks[0].ndim)]
    padded = []
    for c in chunks:
        pad = []
        for d in reversed(range(1, c.ndim)):
            pad += [0, shape[d - 1] - c.shape[d]]
        padded.append(F.pad(c, pad, value=fill) if any(pad) else c)
    return torch.cat(padded)
