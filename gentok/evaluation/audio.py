"""Held-out evaluation of audio tokenizers: multi-scale mel distance and SI-SNR against bitrate, an honest
equal-bitrate baseline (mu-law PCM at a reduced sample rate), and the files a user listens to and looks at first."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from scipy.signal import resample_poly
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from gentok.files import atomic_write_json
from gentok.losses.audio import MultiScaleMelLoss, si_snr
from gentok.tokenizers.audio.assets import write_audio

# a fixed metric, independent of any model's training loss, so numbers compare across models
EVAL_MEL_WINDOWS = (64, 128, 256, 512, 1024, 2048)
_MEL_CACHE: dict[int, MultiScaleMelLoss] = {}


def mel_distance(est: Tensor, ref: Tensor, sample_rate: int) -> float:
    """Multi-scale log10-mel L1 between two batches `(b, samples)` (lower is better)."""
    if sample_rate not in _MEL_CACHE:
        _MEL_CACHE[sample_rate] = MultiScaleMelLoss(sample_rate, EVAL_MEL_WINDOWS)
    return float(_MEL_CACHE[sample_rate](est.float().cpu(), ref.float().cpu()))


def collect(dataset: Dataset, limit: int | None = None) -> Tensor:
    n = len(dataset) if limit is None else min(limit, len(dataset))
    return torch.stack([dataset[i] for i in range(n)])


@torch.no_grad()
def reconstruct(model, wav: Tensor, n_quantizers: int | None = None, batch_size: int = 32) -> Tensor:
    """`model.decode(model.encode(wav))` at the model's rate, trimmed to the input length."""
    out = []
    for i in range(0, len(wav), batch_size):
        part = wav[i:i + batch_size]
        tokens = model.encode(part, n_quantizers=n_quantizers)
        out.append(model.decode(tokens)[:, : part.shape[-1]].cpu())
    return torch.cat(out)


def audio_eval_fn(model, loader: DataLoader) -> dict:
    """`fit` eval hook: mel distance and SI-SNR of full-depth reconstructions of the held-out crops."""
    wav = torch.cat(list(loader))
    recon = reconstruct(model, wav)
    return {"mel_distance": mel_distance(recon, wav, model.sample_rate), "si_snr": float(si_snr(recon, wav).mean())}


def rate_distortion(model, wav: Tensor, levels: list[int] | None = None) -> list[dict]:
    """One row per number of quantizers (1, 2, 4, ... and all): kbps, mel distance, SI-SNR."""
    if levels is None:
        levels = sorted({2**i for i in range(int(math.log2(model.num_quantizers)) + 1)} | {model.num_quantizers})
    rows = []
    for k in levels:
        recon = reconstruct(model, wav, k)
        rows.append({"n_quantizers": k, "kbps": model.bitrate(k) / 1000,
                     "mel_distance": mel_distance(recon, wav, model.sample_rate),
                     "si_snr": float(si_snr(recon, wav).mean())})
    return rows


def _mu_law(x: np.ndarray, bits: int) -> np.ndarray:
    mu = 2**bits - 1
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    q = np.round((y + 1) / 2 * mu) / mu * 2 - 1  # uniform levels in the companded domain
    return np.sign(q) * ((1 + mu) ** np.abs(q) - 1) / mu


def equal_bit_baseline(wav: Tensor, sample_rate: int, bits_per_second: float) -> tuple[Tensor, dict]:
    """Best (rate r, bits b) with r * b <= `bits_per_second`: resample to r, mu-law quantize to b bits, resample
    back. Chosen on mel distance over `wav`; returns the reconstructions and the chosen setting."""
    best = None
    x = wav.double().numpy()
    for bits in range(1, 17):
        rate = int(bits_per_second // bits)
        if rate < 200:
            continue
        rate = min(rate, sample_rate)
        g = math.gcd(rate, sample_rate)
        low = resample_poly(x, rate // g, sample_rate // g, axis=-1)
        back = resample_poly(_mu_law(np.clip(low, -1, 1), bits), sample_rate // g, rate // g, axis=-1)
        recon = torch.from_numpy(back[..., : x.shape[-1]]).float()
        d = mel_distance(recon, wav, sample_rate)
        if best is None or d < best[0]:
            best = (d, recon, {"rate_hz": rate, "bits": bits})
    if best is None:
        raise ValueError(f"no baseline fits {bits_per_second} bits per second")
    return best[1], best[2]


def spectrogram_png(rows: dict[str, Tensor], sample_rate: int, path) -> Path:
    """Log spectrograms of 1-D signals, one panel per entry of `rows` (name -> (samples,)), as one PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gentok.files import atomic_write_bytes

    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 1.9 * len(rows)), sharex=True, squeeze=False)
    n_fft = 512 if sample_rate <= 24000 else 1024
    for ax, (name, x) in zip(axes[:, 0], rows.items()):
        spec = torch.stft(x.float().cpu(), n_fft, n_fft // 4, window=torch.hann_window(n_fft), return_complex=True)
        db = 20 * torch.log10(spec.abs().clamp_min(1e-5))
        ax.imshow(db.numpy(), origin="lower", aspect="auto", vmin=float(db.max()) - 80, vmax=float(db.max()),
                  extent=(0, x.shape[-1] / sample_rate, 0, sample_rate / 2000), cmap="magma")
        ax.set_ylabel("kHz")
        ax.set_title(name, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def write_report(model, held_out: Dataset, out_dir, n_examples: int = 4, extra: dict | None = None) -> dict:
    """Rate-distortion table + equal-bit baseline on `held_out`, example WAVs and a spectrogram PNG, `summary.json`."""
    out_dir = Path(out_dir)
    model.eval()
    wav = collect(held_out)
    rows = rate_distortion(model, wav)
    base, setting = equal_bit_baseline(wav, model.sample_rate, model.bitrate())
    baseline = {"kbps": model.bitrate() / 1000, **setting, "mel_distance": mel_distance(base, wav, model.sample_rate),
                "si_snr": float(si_snr(base, wav).mean())}
    # listenable examples: concatenate a few held-out crops into one clip
    clip = wav[:n_examples].reshape(-1)
    panels = {"original": clip}
    write_audio(out_dir / "samples" / "original.wav", clip, model.sample_rate)
    for k in sorted({1, model.num_quantizers}):
        rec = reconstruct(model, clip[None], k)[0]
        name = f"codec_{model.bitrate(k) / 1000:.1f}kbps"
        write_audio(out_dir / "samples" / f"{name}.wav", rec, model.sample_rate)
        panels[f"codec, {k} quantizer(s), {model.bitrate(k) / 1000:.1f} kbps"] = rec
    spectrogram_png(panels, model.sample_rate, out_dir / "spectrograms.png")
    summary = {"rate_distortion": rows, "equal_bit_baseline": baseline, "frame_rate": model.frame_rate,
               "sample_rate": model.sample_rate, "held_out_clips": len(wav), **(extra or {})}
    atomic_write_json(out_dir / "summary.json", summary)
    print(f"\n{'quantizers':>10} {'kbps':>6} {'mel dist':>9} {'SI-SNR dB':>10}")
    for r in rows:
        print(f"{r['n_quantizers']:>10} {r['kbps']:>6.2f} {r['mel_distance']:>9.3f} {r['si_snr']:>10.2f}")
    print(f"{'mu-law PCM':>10} {baseline['kbps']:>6.2f} {baseline['mel_distance']:>9.3f} {baseline['si_snr']:>10.2f}"
          f"   ({setting['rate_hz']} Hz x {setting['bits']} bits)")
    print(f"wrote {out_dir / 'summary.json'}, {out_dir / 'spectrograms.png'}, {out_dir / 'samples'}/*.wav")
    return summary
