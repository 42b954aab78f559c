"""The audio tokenizer contract, shared by the trainable codec and the transformers adapters.

    tokens = tok.encode(wav, sample_rate=None, n_quantizers=None, padding_mask=None, lengths=None)
    wav = tok.decode(tokens)            # Tokens, or bare ids (b, frames, q <= num_quantizers)

`tokens.ids` is int64 `(b, frames, q)`: position (code frame) first, residual level last, with `PAD_ID` (-1) on every
level of the frames past each item's end; `tokens.lengths` holds the real frames per item, `ceil(samples at the
model rate / hop)`; `tokens.meta` the model's `sample_rate` and `frame_rate`. Audio at another rate is resampled
first (`sample_rate` defaults to the model's own). `decode` returns `(b, frames * hop)` at the model rate, zero past
each item's end. `num_codebooks` is `num_quantizers`; `bitrate(k)` is bits per second with the first k levels.

Files (WAV/FLAC) go through `encode_files` / `decode_to_files`, which keep each file's rate and length in
`Tokens.extras` (`source_sample_rate`, `source_length`; 0 means unknown, so zero padding is harmless) so decoded
files line up with the originals. These models are mono: multi-channel files are averaged (`mono="mix"`, announced
with a warning) or refused (`mono="error"`).

Subclasses implement `_encode_frames(x, frames, k)` and `_decode_frames(ids, frames)` on validated tensors.
"""

from __future__ import annotations

import abc
import os
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from gentok.tokenizers.audio.assets import check_sample_rate, read_mono_files, resample, to_mono_batch, write_audio
from gentok.tokenizers.base import Tokenizer
from gentok.tokenizers.tokens import Tokens
from gentok.validate import PAD_ID


class AudioTokenizer(Tokenizer):
    """Base class of audio tokenizers; see the module docstring."""

    # -- what subclasses provide ----------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def sample_rate(self) -> int:
        """The rate the model works at."""

    @property
    @abc.abstractmethod
    def hop(self) -> int:
        """Samples per code frame."""

    @property
    @abc.abstractmethod
    def num_quantizers(self) -> int:
        """Residual levels at full depth."""

    @abc.abstractmethod
    def _encode_frames(self, x: Tensor, frames: Tensor, k: int) -> Tensor:
        """x (b, frames.max() * hop) zero-padded at the model rate -> ids (b, frames.max(), k); frames past an
        item's end may hold anything (the caller overwrites them with PAD_ID)."""

    @abc.abstractmethod
    def _decode_frames(self, ids: Tensor, frames: Tensor) -> Tensor:
        """Validated ids (b, F, k) (padding frames hold PAD_ID), real frames (b,) on the CPU -> audio (b, F * hop),
        zero past each item's end."""

    # -- sizes and rates ------------------------------------------------------------------------------------------
    @property
    def num_codebooks(self) -> int:
        return self.num_quantizers

    @property
    def frame_rate(self) -> float:
        """Code frames per second."""
        return self.sample_rate / self.hop

    def bitrate(self, n_quantizers: int | None = None) -> float:
        """Bits per second of audio when the first `n_quantizers` levels are kept (all by default)."""
        return self._check_n(n_quantizers) * self.bits_per_code * self.frame_rate

    def bits_summary(self, tokens: Tokens) -> str:
        """The base summary plus bits per second of audio (at the levels the tokens keep)."""
        text = super().bits_summary(tokens)
        rate = tokens.meta.get("frame_rate")
        return text + (f", {tokens.bits_per_token * rate:,.0f} bits per second of audio" if rate else "")

    def num_frames(self, samples: int) -> int:
        """Code frames of `samples` samples at the model rate."""
        return -(-int(samples) // self.hop)

    # -- the contract ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, wav, sample_rate: int | None = None, n_quantizers: int | None = None,
               padding_mask: Tensor | None = None, lengths: Tensor | None = None) -> Tokens:
        """Audio -> `Tokens` with ids `(b, frames, k)`.

        Args:
            wav: float `(b, samples)`, `(b, 1, samples)`, `(samples,)`, or a list of 1-D waveforms of any lengths.
            sample_rate: the rate of `wav` (an int; default: the model's own); other rates are resampled.
            n_quantizers: keep the first k residual levels (all by default): `bitrate(k)` bits per second.
            padding_mask / lengths: for a padded batch (`(b, samples)` bool, True on audio / `(b,)` samples).
        Returns:
            `Tokens`: ids `(b, frames, k)` with `PAD_ID` on frames past each item's end, `lengths` = real frames,
            meta `sample_rate` (the model's) and `frame_rate`.
        """
        x, lengths = self._prepare(wav, sample_rate, lengths, padding_mask)
        k = self._check_n(n_quantizers)
        frames = torch.tensor([self.num_frames(n) for n in lengths])
        x = F.pad(x, (0, int(frames.max()) * self.hop - x.shape[-1]))
        return self._tokens(self._encode_frames(x, frames, k), frames)

    @torch.no_grad()
    def decode(self, tokens) -> Tensor:
        """`Tokens` or bare ids `(b, frames, k)` (k <= num_quantizers; PAD_ID on whole frames past each item's end)
        -> audio `(b, frames * hop)` at the model's sample rate, zero past each item's last frame."""
        tokens = self._check_tokens(tokens)
        return self._decode_frames(tokens.ids, tokens.lengths.cpu())

    # -- files, for the CLI ---------------------------------------------------------------------------------------
    def read_assets(self, paths, mono: str = "mix") -> list[Tensor]:
        """WAV/FLAC files -> 1-D float tensors at the model's sample rate (`mono`: see `encode_files`)."""
        return [w for w, _, _ in self._read_files(paths, mono)]

    def write_assets(self, x: Tensor, out_dir, names) -> list[Path]:
        """Audio `(b, samples)` at the model's rate -> one WAV (or FLAC, by name) per row."""
        return [write_audio(Path(out_dir) / _audio_name(name), w, self.sample_rate) for w, name in zip(x, names)]

    def encode_files(self, paths, mono: str = "mix", n_quantizers: int | None = None) -> Tokens:
        """`encode` of WAV/FLAC files, each at its own rate, with `source_sample_rate` and `source_length` (samples)
        per file in `extras` so that `decode_to_files` writes files of the original rate and length.

        `mono="mix"` averages the channels of multi-channel files and warns once; `mono="error"` refuses them.
        """
        reads = self._read_files(paths, mono)
        tokens = self.encode([w for w, _, _ in reads], n_quantizers=n_quantizers)
        extras = {"source_sample_rate": torch.tensor([sr for _, sr, _ in reads], dtype=torch.long),
                  "source_length": torch.tensor([n for _, _, n in reads], dtype=torch.long)}
        return replace(tokens.to("cpu"), extras=extras)

    @torch.no_grad()
    def decode_to_files(self, tokens, out_dir, names) -> list[Path]:
        """Decode and write one file per item: at its source rate and length when `extras` hold them (non-zero),
        else at the model's rate with the item's `frames * hop` samples."""
        tokens = self._check_tokens(tokens)
        wav = self._decode_frames(tokens.ids, tokens.lengths.cpu()).cpu()
        zeros = torch.zeros(len(tokens), dtype=torch.long)
        rates = tokens.extras.get("source_sample_rate", zeros).tolist()
        sizes = tokens.extras.get("source_length", zeros).tolist()
        written = []
        for w, f, sr, n, name in zip(wav, tokens.lengths.tolist(), rates, sizes, names):
            path = Path(out_dir) / _audio_name(name)
            if sr <= 0 or n <= 0:  # no source facts (bare tokens, or zero padding): the model's rate, all frames
                written.append(write_audio(path, w[: f * self.hop], self.sample_rate))
                continue
            sr = check_sample_rate(int(sr))
            n_model = -(-n * self.sample_rate // sr)  # resample_poly's output length at the model rate
            y = resample(w[None, :n_model], self.sample_rate, sr)[0]
            written.append(write_audio(path, y[0, :n], sr))
        return written

    # -- validation -----------------------------------------------------------------------------------------------
    def _check_n(self, n_quantizers) -> int:
        if n_quantizers is None:
            return self.num_quantizers
        if isinstance(n_quantizers, bool) or not isinstance(n_quantizers, int):
            raise ValueError(f"n_quantizers must be an int, got {type(n_quantizers).__name__}")
        if not 1 <= n_quantizers <= self.num_quantizers:
            raise ValueError(f"n_quantizers must lie in [1, {self.num_quantizers}], got {n_quantizers}")
        return n_quantizers

    def _prepare(self, wav, sample_rate, lengths, padding_mask) -> tuple[Tensor, Tensor]:
        """A zero-padded float batch at the model rate on the model's device, and its lengths (b,) on the CPU."""
        sample_rate = self.sample_rate if sample_rate is None else check_sample_rate(sample_rate)
        x, lengths = to_mono_batch(wav, lengths, padding_mask)
        x = x * (torch.arange(x.shape[-1], device=x.device)[None] < lengths.to(x.device)[:, None])  # zero padding
        x, lengths = resample(x, sample_rate, self.sample_rate, lengths)
        return x.to(self._device()), lengths

    def _tokens(self, ids: Tensor, frames: Tensor) -> Tokens:
        """Ids (b, F, k) from `_encode_frames` -> `Tokens` with PAD_ID on every level past `frames` (b,)."""
        ids = ids.long()
        pad = torch.arange(ids.shape[1], device=ids.device)[None] >= frames.to(ids.device)[:, None]
        ids = ids.masked_fill(pad[..., None], PAD_ID)
        return self.make_tokens(ids, frames, sample_rate=self.sample_rate, frame_rate=self.frame_rate)

    def _check_tokens(self, tokens) -> Tokens:
        """`as_tokens`, plus what is particular to audio: ids in the pre-0.2 layout (b, q, frames) get a hint, a
        token file of a model at another rate and items without a frame are refused."""
        ids = tokens.ids if isinstance(tokens, Tokens) else tokens
        if isinstance(ids, Tensor) and ids.ndim == 3 and ids.shape[2] > self.num_quantizers >= ids.shape[1]:
            raise ValueError(f"expected ids of shape (b, frames, q<={self.num_quantizers}), got {tuple(ids.shape)}; "
                             "gentok < 0.2 returned (b, q, frames): use ids.transpose(1, 2)")
        tokens = self.as_tokens(tokens)
        rate = tokens.meta.get("sample_rate")
        if rate is not None and rate != self.sample_rate:
            raise ValueError(f"these tokens come from a model at {rate} Hz; this one works at {self.sample_rate} Hz")
        if int(tokens.lengths.min()) < 1:
            raise ValueError("every item needs at least one real frame (an id that is not PAD_ID)")
        return tokens

    def _read_files(self, paths, mono: str) -> list[tuple[Tensor, int, int]]:
        """(1-D audio at the model rate, the file's rate, its length in samples) per file."""
        out = []
        for data, sr in read_mono_files(paths, mono):
            wav = resample(torch.from_numpy(data)[None], sr, self.sample_rate)[0][0]
            out.append((wav, sr, data.shape[0]))
        return out


def _audio_name(name: str) -> str:
    p = Path(os.fspath(name))
    return p.name if p.suffix.lower() in (".wav", ".flac") else f"{p.stem}.wav"
