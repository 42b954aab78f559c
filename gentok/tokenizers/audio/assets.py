"""The audio edge shared by audio tokenizers: validate waveforms, pad batches, resample, read and write WAV/FLAC.

Waveforms are float mono signals, nominally in [-1, 1]. A batch is `(b, samples)` (a `(b, 1, samples)` tensor, a
1-D tensor/array or a list of 1-D items of different lengths are accepted too) plus the length of each item.
Resampling uses scipy's polyphase filter (`resample_poly`), so no torchaudio is needed.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from gentok.files import atomic_write_bytes

AUDIO_SUFFIXES = (".wav", ".flac")


def check_sample_rate(sample_rate) -> int:
    """The sample rate as a Python int; `ValueError` unless it is a positive integer (not a float, str or bool)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise ValueError(f"sample_rate must be a positive int (samples per second), got {type(sample_rate).__name__} "
                         f"{sample_rate!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate}")
    return int(sample_rate)


def _as_tensor(item, what: str) -> Tensor:
    if isinstance(item, np.ndarray):
        item = torch.from_numpy(np.ascontiguousarray(item))
    if not isinstance(item, Tensor):
        raise ValueError(f"expected {what} as a torch tensor, numpy array or list of 1-D ones, got {type(item).__name__}")
    if not item.dtype.is_floating_point:
        raise ValueError(f"expected float audio in [-1, 1], got dtype {item.dtype} (divide int16 PCM by 32768)")
    return item


def to_mono_batch(wav, lengths: Tensor | None = None, padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """A float32 batch `(b, samples)` and `lengths (b,)` from the accepted waveform layouts.

    Args:
        wav: tensor/array `(samples,)`, `(b, samples)` or `(b, 1, samples)`, or a list of 1-D items (padded here).
        lengths: optional `(b,)` valid samples per item of a padded batch.
        padding_mask: optional `(b, samples)` or `(b, 1, samples)` bool, True on real audio (a prefix of each row).
    Raises `ValueError` for stereo, empty, NaN/inf, integer audio, or an inconsistent mask.
    """
    if isinstance(wav, (list, tuple)):
        if not wav:
            raise ValueError("expected at least one waveform, got an empty list")
        items = [_as_tensor(w, "each waveform") for w in wav]
        for i, w in enumerate(items):
            if w.ndim == 2 and w.shape[0] == 1:
                items[i] = w = w[0]
            if w.ndim != 1:
                raise ValueError(f"expected mono 1-D waveforms in the list, item {i} has shape {tuple(w.shape)} "
                                 "(average the channels of stereo audio first)")
        if lengths is not None or padding_mask is not None:
            raise ValueError("pass either a list of waveforms or a padded batch with lengths/padding_mask, not both")
        lengths = torch.tensor([w.shape[0] for w in items])
        x = torch.zeros(len(items), int(lengths.max()), dtype=torch.float32, device=items[0].device)
        for i, w in enumerate(items):
            x[i, : w.shape[0]] = w.float()
    else:
        x = _as_tensor(wav, "audio")
        if x.ndim == 1:
            x = x[None]
        elif x.ndim == 3:
            if x.shape[1] != 1:
                raise ValueError(f"expected mono audio (b, 1, samples), got {x.shape[1]} channels in shape "
                                 f"{tuple(x.shape)}; this model is mono (average the channels first)")
            x = x[:, 0]
        elif x.ndim != 2:
            raise ValueError(f"expected audio of shape (samples,), (b, samples) or (b, 1, samples), got {tuple(x.shape)}")
        x = x.float()
        if padding_mask is not None:
            if lengths is not None:
                raise ValueError("pass lengths or padding_mask, not both")
            lengths = _lengths_from_mask(padding_mask, x.shape)
    if x.shape[0] == 0 or x.shape[-1] == 0:
        raise ValueError(f"audio is empty: shape {tuple(x.shape)}")
    if lengths is None:
        lengths = torch.full((x.shape[0],), x.shape[-1], dtype=torch.long)
    lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
    if lengths.shape != (x.shape[0],) or int(lengths.min()) < 1 or int(lengths.max()) > x.shape[-1]:
        raise ValueError(f"lengths must be (b,) = ({x.shape[0]},) values in [1, {x.shape[-1]}], got {lengths.tolist()}")
    if not torch.isfinite(x).all():
        raise ValueError("audio contains NaN or infinite values")
    return x, lengths


def _lengths_from_mask(mask: Tensor, shape) -> Tensor:
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"padding_mask must be a bool tensor, got {getattr(mask, 'dtype', type(mask))}")
    if mask.ndim == 3 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"padding_mask must have the audio's shape {tuple(shape)}, got {tuple(mask.shape)}")
    lengths = mask.sum(-1).cpu()
    prefix = torch.arange(mask.shape[-1])[None] < lengths[:, None]
    if not torch.equal(prefix, mask.cpu()):
        raise ValueError("padding_mask must be True on a prefix of each row (audio first, padding after)")
    return lengths


def resample(x: Tensor, orig_sr: int, target_sr: int, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Resample a batch `(b, samples)` from `orig_sr` to `target_sr` (polyphase, each item over its own length).

    Returns the resampled zero-padded batch and the new lengths `ceil(len * target / orig)`.
    """
    orig_sr, target_sr = check_sample_rate(orig_sr), check_sample_rate(target_sr)
    if lengths is None:
        lengths = torch.full((x.shape[0],), x.shape[-1], dtype=torch.long)
    if orig_sr == target_sr:
        return x, lengths
    from scipy.signal import resample_poly

    g = math.gcd(orig_sr, target_sr)
    up, down = target_sr // g, orig_sr // g
    outs = [resample_poly(x[i, : int(n)].detach().cpu().double().numpy(), up, down) for i, n in enumerate(lengths)]
    new_lengths = torch.tensor([o.shape[0] for o in outs], dtype=torch.long)
    out = torch.zeros(x.shape[0], int(new_lengths.max()), dtype=x.dtype)
    for i, o in enumerate(outs):
        out[i, : o.shape[0]] = torch.from_numpy(o).to(x.dtype)
    return out.to(x.device), new_lengths


MONO_MODES = ("mix", "error")  # multi-channel files: average the channels / refuse them


def check_mono(mono) -> str:
    """The downmix mode; `ValueError` unless it is one of `MONO_MODES`."""
    if mono not in MONO_MODES:
        raise ValueError(f"mono must be one of {MONO_MODES} ('mix' averages the channels of multi-channel files, "
                         f"'error' refuses them), got {mono!r}")
    return mono


def read_audio_channels(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a WAV/FLAC file as float32 `(samples, channels)` and its sample rate; `ValueError` if unreadable/empty."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"audio file {path} does not exist")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise ValueError(f"cannot read audio file {path}: {e}") from None
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path} is empty")
    return data, int(sr)


def downmix(data: np.ndarray, mono: str, path="audio") -> np.ndarray:
    """`(samples, channels)` -> `(samples,)`: `mono="mix"` averages the channels, `mono="error"` refuses more than
    one with a `ValueError` naming `path`."""
    if data.shape[1] > 1:
        if check_mono(mono) == "error":
            raise ValueError(f"{path} has {data.shape[1]} channels; this model is mono (use mono='mix', on the CLI "
                             "`--option mono=mix`, to average them, or downmix first: `sox in.wav -c 1 out.wav`)")
        data = data.mean(axis=1, keepdims=True)
    return data[:, 0]


def read_audio(path: str | os.PathLike, mono: str = "error") -> tuple[np.ndarray, int]:
    """Read a WAV/FLAC file as float32 `(samples,)` and its sample rate.

    `mono="error"` rejects multi-channel files with a `ValueError`; `mono="mix"` averages the channels.
    """
    check_mono(mono)
    data, sr = read_audio_channels(path)
    return downmix(data, mono, path), sr


def read_mono_files(paths, mono: str = "mix") -> list[tuple[np.ndarray, int]]:
    """`read_audio` over files, announcing a downmix once (one warning naming the multi-channel files), so a user
    who passes stereo music knows the tokens describe its mono mix."""
    check_mono(mono)
    out, mixed = [], []
    for p in paths:
        data, sr = read_audio_channels(p)
        if data.shape[1] > 1 and mono == "mix":
            mixed.append(f"{Path(p).name} ({data.shape[1]} channels)")
        out.append((downmix(data, mono, p), sr))
    if mixed:
        warnings.warn(f"averaged the channels of {len(mixed)} multi-channel file(s) to mono: {', '.join(mixed)} "
                      "(mono='error' refuses such files instead)", UserWarning, stacklevel=4)
    return out


def write_audio(path: str | os.PathLike, wav, sample_rate: int) -> Path:
    """Write a mono waveform `(samples,)` as WAV (16-bit) or FLAC (by suffix; default WAV), atomically."""
    path = Path(path)
    fmt = {".wav": "WAV", ".flac": "FLAC"}.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot write {path}: use a .wav or .flac name")
    arr = wav.detach().float().cpu().numpy() if isinstance(wav, Tensor) else np.asarray(wav, dtype=np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.clip(arr, -1.0, 1.0), check_sample_rate(sample_rate), format=fmt, subtype="PCM_16")
    atomic_write_bytes(path, buf.getvalue())
    return path


def list_audio_files(directory: str | os.PathLike) -> list[Path]:
    """All WAV/FLAC files under `directory` (recursively), sorted; `ValueError` if there are none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"audio directory {directory} does not exist")
    files = sorted(p for p in directory.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no .wav or .flac files under {directory}")
    return files
