"""The audio tokenizer contract, shared by the trainable codec and the transformers adapters.

`encode(wav, sample_rate, n_quantizers=None, padding_mask=None, lengths=None) -> codes (b, k, frames)` with
`frames = ceil(samples_at_model_rate / hop)` and -1 on the frames past each item's end; `decode(codes) -> wav
(b, frames * hop)`; `sample_rate`, `hop`, `frame_rate`, `num_quantizers`, `bitrate(k) = k * log2(vocab) *
frame_rate`. Audio at another rate is resampled; audio files (WAV/FLAC) go through `encode_files` /
`decode_to_files`, which keep each file's rate and length so decoded files line up with the originals.

Subclasses implement `_encode_frames(x, frames, k)` and `_decode_frames(codes, frames)` on validated tensors.
"""

from __future__ import annotations

import abc
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from gentok.tokenizers.audio.io import check_sample_rate, read_audio, resample, to_mono_batch, write_audio
from gentok.tokenizers.base import Tokenizer


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
        """x (b, frames.max() * hop) zero-padded at the model rate -> codes (b, k, frames.max()); frames past an
        item's end may hold anything (the caller overwrites them with -1)."""

    @abc.abstractmethod
    def _decode_frames(self, codes: Tensor, frames: Tensor) -> Tensor:
        """Validated codes (b, k, F) (padding frames hold -1) -> audio (b, F * hop), zero past each item's end."""

    # -- rates ----------------------------------------------------------------------------------------------------
    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    def bitrate(self, n_quantizers: int | None = None) -> float:
        """Bits per second when the first `n_quantizers` levels are kept (all by default)."""
        return self._check_n(n_quantizers) * math.log2(self.vocab_size) * self.frame_rate

    @property
    def bits_per_sample(self) -> float:
        """Bits per second of audio at full depth."""
        return self.bitrate()

    def num_frames(self, samples: int) -> int:
        return -(-int(samples) // self.hop)

    # -- the API --------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, wav, sample_rate: int, n_quantizers: int | None = None, padding_mask: Tensor | None = None,
               lengths: Tensor | None = None) -> Tensor:
        """Audio -> codes `(b, k, frames)`.

        Args:
            wav: `(b, samples)`, `(b, 1, samples)`, `(samples,)`, or a list of 1-D waveforms of any lengths.
            sample_rate: the rate of `wav` (int); audio at another rate than the model's is resampled.
            n_quantizers: keep the first k residual levels (all by default): `bitrate(k)` bits per second.
            padding_mask / lengths: for a padded batch; frames past an item's end hold -1.
        """
        x, lengths = self._prepare(wav, sample_rate, lengths, padding_mask)
        k = self._check_n(n_quantizers)
        frames = torch.tensor([self.num_frames(n) for n in lengths])
        x = F.pad(x, (0, int(frames.max()) * self.hop - x.shape[-1]))
        codes = self._encode_frames(x, frames, k).long()
        pad = torch.arange(codes.shape[-1], device=codes.device)[None] >= frames.to(codes.device)[:, None]
        return codes.masked_fill(pad[:, None], -1)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """Codes `(b, k, frames)` (k <= num_quantizers; -1 on whole padding frames at the end) -> audio
        `(b, frames * hop)` at the model's sample rate, zero past each item's last frame."""
        codes, frames = self._check_codes(codes)
        return self._decode_frames(codes, frames)

    # -- files, for the CLI ---------------------------------------------------------------------------------------
    def read_assets(self, paths) -> list[Tensor]:
        """Mono WAV/FLAC files -> 1-D float tensors at the model's sample rate."""
        out = []
        for p in paths:
            data, sr = read_audio(p)
            out.append(resample(torch.from_numpy(data)[None], sr, self.sample_rate)[0][0])
        return out

    def write_assets(self, x: Tensor, out_dir, names) -> list[Path]:
        return [write_audio(Path(out_dir) / _audio_name(name), w, self.sample_rate) for w, name in zip(x, names)]

    def encode_files(self, paths) -> dict[str, Tensor]:
        """`ids (b, q, frames)` (-1 past each file's end) plus each file's `lengths` and `sample_rate`, so that
        `decode_to_files` writes files of the original rate and length."""
        reads = [read_audio(p) for p in paths]
        items = [resample(torch.from_numpy(d)[None], sr, self.sample_rate)[0][0] for d, sr in reads]
        return {"ids": self.encode(items, self.sample_rate),
                "lengths": torch.tensor([d.shape[0] for d, _ in reads], dtype=torch.long),
                "sample_rate": torch.tensor([sr for _, sr in reads], dtype=torch.long)}

    def decode_to_files(self, tensors: dict[str, Tensor], out_dir, names) -> list[Path]:
        if "ids" not in tensors:
            raise ValueError(f"token file has no 'ids' tensor (found {sorted(tensors)})")
        wav = self.decode(tensors["ids"]).cpu()
        if "lengths" not in tensors or "sample_rate" not in tensors:
            return self.write_assets(wav, out_dir, names)
        written = []
        for w, n, sr, name in zip(wav, tensors["lengths"].tolist(), tensors["sample_rate"].tolist(), names):
            sr = check_sample_rate(int(sr))
            n_model = -(-n * self.sample_rate // sr)  # resample_poly's output length at the model rate
            y = resample(w[None, :n_model], self.sample_rate, sr)[0]
            written.append(write_audio(Path(out_dir) / _audio_name(name), y[0, :n], sr))
        return written

    # -- validation -----------------------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _check_n(self, n_quantizers) -> int:
        if n_quantizers is None:
            return self.num_quantizers
        if isinstance(n_quantizers, bool) or not isinstance(n_quantizers, int):
            raise ValueError(f"n_quantizers must be an int, got {type(n_quantizers).__name__}")
        if not 1 <= n_quantizers <= self.num_quantizers:
            raise ValueError(f"n_quantizers must lie in [1, {self.num_quantizers}], got {n_quantizers}")
        return n_quantizers

    def _prepare(self, wav, sample_rate, lengths, padding_mask) -> tuple[Tensor, Tensor]:
        sample_rate = check_sample_rate(sample_rate)
        x, lengths = to_mono_batch(wav, lengths, padding_mask)
        x = x * (torch.arange(x.shape[-1], device=x.device)[None] < lengths.to(x.device)[:, None])  # zero padding
        x, lengths = resample(x, sample_rate, self.sample_rate, lengths)
        return x.to(self._device()), lengths

    def _check_codes(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """Validate codes (b, k, F); return them as long and the number of real frames per item."""
        if not isinstance(codes, Tensor) or codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise ValueError(f"expected integer codes (b, k, frames), got {getattr(codes, 'dtype', type(codes))}")
        if codes.ndim != 3 or not 1 <= codes.shape[1] <= self.num_quantizers or codes.shape[-1] == 0:
            raise ValueError(f"expected codes of shape (b, k<={self.num_quantizers}, frames>0), got {tuple(codes.shape)}")
        codes = codes.long()
        if int(codes.min()) < -1 or int(codes.max()) >= self.vocab_size:
            raise ValueError(f"codes must lie in [0, {self.vocab_size}) (or -1 on padding frames), got range "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        pad = codes < 0
        frame_pad = pad.all(dim=1)
        if bool((pad.any(dim=1) & ~frame_pad).any()):
            raise ValueError("-1 marks a whole padding frame: a frame may not mix -1 with real codes")
        frames = (~frame_pad).sum(-1).cpu()
        prefix = torch.arange(codes.shape[-1])[None] < frames[:, None]
        if not torch.equal(prefix, (~frame_pad).cpu()) or int(frames.min()) == 0:
            raise ValueError("padding frames (-1) must come after all real frames, and every item needs one real frame")
        return codes, frames


def _audio_name(name: str) -> str:
    p = Path(os.fspath(name))
    return p.name if p.suffix.lower() in (".wav", ".flac") else f"{p.stem}.wav"
