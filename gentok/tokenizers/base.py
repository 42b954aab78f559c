"""The tokenizer contract shared by every modality.

`encode(x) -> ids` (LongTensor `(b, n)`, or `(b, n, q)` for residual codes; variable-length families document their
extra return), `decode(ids) -> x`, `forward(x) -> TokenizerOutput(recon, ids, loss, metrics)` for training,
`vocab_size`, `bits_per_sample`. Every tokenizer validates its input and raises a `ValueError` that names the problem.

For the CLI (`gentok encode/decode`), a tokenizer also turns files into a batch and back: `encode_files(paths)`
returns the tensors to store (at least `ids`), `decode_to_files(tensors, out_dir, names)` writes assets. Each modality
implements `read_assets` / `write_assets`; the CLI never asks what kind of tokenizer it holds.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from gentok.hub import PretrainedMixin


@dataclass
class TokenizerOutput:
    recon: Tensor  # reconstruction, same layout as the input
    ids: Tensor  # token ids
    loss: Tensor  # scalar training loss (reconstruction + quantizer terms)
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Tokenizer(PretrainedMixin, nn.Module, metaclass=abc.ABCMeta):
    """Base class of all tokenizers; see the module docstring."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct token ids (per level for residual codes)."""

    @property
    @abc.abstractmethod
    def bits_per_sample(self) -> float:
        """Bits needed to store the tokens of one sample (image, second of audio, ...)."""

    @abc.abstractmethod
    def encode(self, x) -> Tensor:
        """Assets -> token ids."""

    @abc.abstractmethod
    def decode(self, ids: Tensor) -> Tensor:
        """Token ids -> assets."""

    # -- files, for the CLI ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def read_assets(self, paths: list[str | os.PathLike]):
        """Files -> the batch `encode` takes."""

    @abc.abstractmethod
    def write_assets(self, x: Tensor, out_dir: str | os.PathLike, names: list[str]) -> list[Path]:
        """A decoded batch -> files named after `names` in `out_dir`."""

    def encode_files(self, paths: list[str | os.PathLike]) -> dict[str, Tensor]:
        """Tensors to store for these files; `ids` always, families may add more (lengths, ...)."""
        return {"ids": self.encode(self.read_assets(paths))}

    def decode_to_files(self, tensors: dict[str, Tensor], out_dir: str | os.PathLike, names: list[str]) -> list[Path]:
        if "ids" not in tensors:
            raise ValueError(f"token file has no 'ids' tensor (found {sorted(tensors)})")
        return self.write_assets(self.decode(tensors["ids"]), out_dir, names)

    # -- shared validation ----------------------------------------------------------------------------------------
    def check_ids(self, ids: Tensor, shape_tail: tuple[int, ...], what: str = "ids") -> Tensor:
        """Raise `ValueError` unless `ids` is an integer tensor (b, *shape_tail) with values in [0, vocab_size)."""
        if not isinstance(ids, Tensor):
            raise ValueError(f"expected {what} as a torch tensor, got {type(ids).__name__}")
        if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.is_complex():
            raise ValueError(f"expected integer {what}, got dtype {ids.dtype}")
        if ids.ndim != 1 + len(shape_tail) or tuple(ids.shape[1:]) != tuple(shape_tail):
            raise ValueError(f"expected {what} of shape (b, {', '.join(map(str, shape_tail))}), got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(
                f"{what} out of range: values must lie in [0, {self.vocab_size}), got [{int(ids.min())}, {int(ids.max())}]"
            )
        return ids.long()
