"""Audio training data without downloads: speech synthesised with `espeak-ng` when it is installed (many sentences,
several voices, speeds and pitches), otherwise speech-like and music-like signals generated in code; or the user's
folder of WAV/FLAC files or tar shards of them (WebDataset layout: paths, a folder of `.tar` files or a brace/glob
pattern). A file that cannot be read is skipped and counted, never fatal. Clips are held in memory and cut into
fixed-length random crops for training.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import soundfile as sf
import torch
from scipy.signal import lfilter, resample_poly
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from gentok.data.records import detect_format, expand_pattern
from gentok.tokenizers.audio.assets import AUDIO_SUFFIXES, downmix, list_audio_files

# vowel formants (F1, F2, F3) in Hz, roughly after Peterson & Barney
_VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [660, 1720, 2410],
                    [490, 1350, 1690], [640, 1190, 2390], [570, 840, 2410], [440, 1020, 2240], [390, 1990, 2550]])

_SUBJECTS = ["the old sailor", "a quiet child", "my neighbour", "the river", "every teacher", "a tired horse",
             "the small robot", "our captain", "the northern wind", "a clever student", "the baker", "her brother"]
_VERBS = ["carried", "painted", "remembered", "followed", "discovered", "opened", "repaired", "described",
          "watched", "borrowed", "answered", "measured"]
_OBJECTS = ["a wooden box", "the bright morning", "seven green apples", "the broken bridge", "an empty letter",
            "the distant mountains", "a silver key", "the long winter", "two paper boats", "the evening train",
            "a forgotten song", "the heavy door"]
_TAILS = ["before sunrise.", "with great care.", "near the harbour.", "and then laughed.", "in the village square.",
          "without a word.", "after the storm.", "for the third time.", "under the old oak.", "at exactly noon."]
_VOICES = ["en", "en-us", "en+f2", "en+m3", "en-us+f4", "en+m7", "en-gb-x-rp+f3", "en+klatt"]


def sentences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    pick = lambda xs: xs[rng.integers(len(xs))]  # noqa: E731
    return [f"{pick(_SUBJECTS)} {pick(_VERBS)} {pick(_OBJECTS)} {pick(_TAILS)}".capitalize() for _ in range(n)]


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak_clips(n: int, sample_rate: int, seed: int, voices=_VOICES) -> list[np.ndarray]:
    """`n` spoken sentences (float32 mono at `sample_rate`), each with a random voice, speed and pitch."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for text in tqdm(sentences(n, seed), desc="espeak-ng", leave=False):
        voice = voices[rng.integers(len(voices))]
        cmd = ["espeak-ng", "--stdout", "-v", voice, "-s", str(int(rng.integers(130, 200))),
               "-p", str(int(rng.integers(25, 75))), text]
        res = subprocess.run(cmd, capture_output=True, check=False, timeout=60)
        if res.returncode != 0 or not res.stdout:
            continue  # a voice missing from this espeak-ng build: skip the sentence rather than fail the run
        data, sr = sf.read(io.BytesIO(res.stdout), dtype="float32", always_2d=True)
        wav = data[:, 0]
        if sr != sample_rate:
            g = np.gcd(sr, sample_rate)
            wav = resample_poly(wav, sample_rate // g, sr // g).astype(np.float32)
        peak = np.abs(wav).max()
        if peak > 0:
            out.append((wav / peak * rng.uniform(0.3, 0.9)).astype(np.float32))
    if not out:
        raise RuntimeError("espeak-ng produced no audio")
    return out


def _resonator(x: np.ndarray, freq: float, bw: float, sr: int) -> np.ndarray:
    r = np.exp(-np.pi * bw / sr)
    a = [1.0, -2 * r * np.cos(2 * np.pi * freq / sr), r * r]
    return lfilter([1 - r], a, x)


def speech_like(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Formant-synthesised babble: a glottal pulse train with a wandering pitch through vowel resonators, syllable
    envelopes and fricative noise bursts. Not speech, but it has speech's spectral structure."""
    n = int(seconds * sr)
    out = np.zeros(n)
    pos = 0
    f0 = rng.uniform(90, 240)
    while pos < n:
        syl = int(rng.uniform(0.08, 0.28) * sr)
        seg = min(syl, n - pos)
        t = np.arange(seg)
        f0 = float(np.clip(f0 * np.exp(rng.normal(0, 0.08)), 70, 320))
        pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 6) * t / sr))
        phase = np.cumsum(pitch / sr)
        pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal period
        source = lfilter([1.0], [1.0, -0.95], pulses)  # spectral tilt of the glottal flow
        v = _VOWELS[rng.integers(len(_VOWELS))] * rng.uniform(0.85, 1.2)
        voiced = sum(_resonator(source, f, 60 + 0.05 * f, sr) * g for f, g in zip(v, (1.0, 0.6, 0.3)))
        env = np.abs(np.sin(np.pi * t / max(seg - 1, 1))) ** 0.6
        chunk = voiced * env
        if rng.random() < 0.35:  # fricative: high-passed noise
            noise = lfilter([1, -1], [1, -0.6], rng.normal(0, 1, seg)) * 0.3 * env
            chunk = chunk + noise
        if rng.random() < 0.15:
            chunk = chunk * 0.02  # a pause
        out[pos:pos + seg] = chunk
        pos += seg
    return out


def music_like(seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Random notes of harmonic tones (decaying partials) with attack/decay envelopes, sometimes overlapping."""
    n = int(seconds * sr)
    out = np.zeros(n)
    pos = 0
    while pos < n:
        dur = int(rng.uniform(0.1, 0.5) * sr)
        seg = min(dur, n - pos)
        t = np.arange(seg) / sr
        f = 110 * 2 ** (rng.integers(0, 36) / 12)
        tone = sum(np.sin(2 * np.pi * f * h * t + rng.uniform(0, 6.3)) * rng.uniform(0.3, 1) / h
                   for h in range(1, 8) if f * h < sr / 2)
        env = (1 - np.exp(-t * 200)) * np.exp(-t * rng.uniform(2, 10))
        out[pos:pos + seg] += tone * env
        pos += int(seg * rng.uniform(0.5, 1.0)) + 1
    return out


def synthetic_clips(n: int, seconds: float, sample_rate: int, seed: int) -> list[np.ndarray]:
    """`n` clips: mostly speech-like, some music-like, a few chirps in noise; random levels (-30 .. -12 dBFS RMS)."""
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.65:
            x = speech_like(seconds, sample_rate, rng)
        elif kind < 0.9:
            x = music_like(seconds, sample_rate, rng)
        else:
            t = np.arange(int(seconds * sample_rate)) / sample_rate
            f = rng.uniform(100, 500) * np.exp(t * rng.uniform(0.1, 1.5))
            x = np.sin(2 * np.pi * np.cumsum(f) / sample_rate) + rng.normal(0, 0.05, t.shape)
        rms = np.sqrt(np.mean(x**2)) + 1e-9
        x = x / rms * 10 ** (rng.uniform(-30, -12) / 20)
        clips.append(np.clip(x, -1, 1).astype(np.float32))
    return clips


def _resampled(wav: np.ndarray, sr: int, sample_rate: int) -> np.ndarray:
    if sr == sample_rate:
        return wav
    g = np.gcd(sr, sample_rate)
    return resample_poly(wav, sample_rate // g, sr // g).astype(np.float32)


def decode_audio(data: bytes, name: str, sample_rate: int) -> np.ndarray:
    """WAV/FLAC bytes -> float32 mono (channels averaged) at `sample_rate`; `ValueError` naming `name` when the bytes
    are not readable audio or hold no samples."""
    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, TypeError) as e:
        raise ValueError(f"cannot read audio {name}: {e}") from None
    if wav.shape[0] == 0:
        raise ValueError(f"audio {name} is empty")
    return _resampled(downmix(wav, "mix", name), int(sr), sample_rate)


def _skip(skipped: list | None, name: str, error: Exception) -> None:
    if skipped is not None:
        if len(skipped) < 5:
            print(f"gentok: skipped unreadable audio {name}: {error}", file=sys.stderr, flush=True)
        skipped.append(name)


def folder_clips(directory, sample_rate: int, skipped: list | None = None) -> list[np.ndarray]:
    """Every WAV/FLAC under `directory`, downmixed to mono and resampled to `sample_rate`; unreadable files are
    skipped (their names appended to `skipped`)."""
    out = []
    for path in tqdm(list_audio_files(directory), desc="reading audio", leave=False):
        try:
            out.append(decode_audio(path.read_bytes(), str(path), sample_rate))
        except (ValueError, OSError) as e:
            _skip(skipped, str(path), e)
    return out


def tar_clips(data: str, sample_rate: int, skipped: list | None = None) -> list[np.ndarray]:
    """Every WAV/FLAC member of the tar shards `data` (paths, a folder of `.tar` files or a brace/glob pattern), in
    shard order, mono at `sample_rate`; unreadable members (and unreadable rests of shards) are skipped."""
    paths = expand_pattern(data)
    if len(paths) == 1 and os.path.isdir(paths[0]):
        paths = sorted(os.path.join(paths[0], p) for p in os.listdir(paths[0]) if p.endswith((".tar", ".tar.gz")))
    out = []
    for path in paths:
        name = os.path.basename(path)
        try:
            with tarfile.open(path, "r|*") as tar:
                for member in tar:
                    if member.isfile() and os.path.splitext(member.name)[1].lower() in AUDIO_SUFFIXES:
                        try:
                            out.append(decode_audio(tar.extractfile(member).read(), f"{name}:{member.name}",
                                                    sample_rate))
                        except ValueError as e:
                            _skip(skipped, f"{name}:{member.name}", e)
        except (tarfile.TarError, OSError, EOFError) as e:
            _skip(skipped, name, e)
    return out


def user_clips(data: str, sample_rate: int) -> tuple[list[np.ndarray], str]:
    """(clips, description) of a folder or tar shards of WAV/FLAC files."""
    skipped: list = []
    shards = detect_format(data) == "webdataset"
    clips = (tar_clips if shards else folder_clips)(data, sample_rate, skipped)
    what = f"{len(clips)} clips from {'tar shards ' if shards else ''}{data}"
    return clips, what + (f" ({len(skipped)} unreadable skipped)" if skipped else "")


class AudioCrops(Dataset):
    """`length` fixed crops of `segment` samples from a list of clips; crop i is a pure function of (seed, i).
    Clips shorter than a segment are zero-padded. Items are float32 tensors `(segment,)`."""

    def __init__(self, clips: list[np.ndarray], segment: int, length: int, seed: int = 0):
        if not clips:
            raise ValueError("no audio clips to crop from")
        self.clips, self.segment, self.length = clips, segment, length
        rng = np.random.default_rng(seed)
        weights = np.array([max(len(c), 1) for c in clips], dtype=float)
        self.which = rng.choice(len(clips), size=length, p=weights / weights.sum())
        self.offsets = [int(rng.integers(0, max(len(clips[c]) - segment, 0) + 1)) for c in self.which]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> torch.Tensor:
        clip = self.clips[self.which[i]]
        x = clip[self.offsets[i]:self.offsets[i] + self.segment]
        out = torch.zeros(self.segment)
        out[: len(x)] = torch.from_numpy(np.ascontiguousarray(x))
        return out


def default_audio_data(sample_rate: int, data_dir=None, segment: int = 8000, train_crops: int = 20000,
                       eval_crops: int = 64, seed: int = 0) -> tuple[AudioCrops, AudioCrops, str]:
    """(train crops, held-out crops, description). Held-out crops come from clips never used for training."""
    if data_dir is not None:
        clips, source = user_clips(str(data_dir), sample_rate)
    elif espeak_available():
        clips = espeak_clips(400, sample_rate, seed)
        source = f"{len(clips)} espeak-ng sentences"
    else:
        clips = synthetic_clips(240, 3.0, sample_rate, seed)
        source = f"{len(clips)} generated clips (espeak-ng not installed)"
    if len(clips) < 2:
        raise ValueError(f"need at least 2 audio clips (train + held out), got {len(clips)}")
    n_eval = max(1, len(clips) // 10)
    order = np.random.default_rng(seed).permutation(len(clips))
    held, train = [clips[i] for i in order[:n_eval]], [clips[i] for i in order[n_eval:]]
    return (AudioCrops(train, segment, train_crops, seed), AudioCrops(held, segment, eval_crops, seed + 1), source)
