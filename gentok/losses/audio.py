"""Codec training losses: multi-scale log-mel L1 (DAC, Kumar et al. 2023) and a multi-scale STFT discriminator with
hinge loss and feature matching (EnCodec, Défossez et al. 2022).

The mel filterbank comes from `transformers.audio_utils.mel_filter_bank` (slaney mel, as librosa); the STFT is
`torch.stft`, so no torchaudio is needed.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.parametrizations import weight_norm


def mel_bins_for(window: int) -> int:
    """Mel bands for an STFT window (DAC's pairing: 5 bands at 32 samples, 320 at 2048)."""
    return max(5, window * 5 // 32)


class MelSpectrogram(nn.Module):
    """Magnitude mel spectrogram `(b, samples) -> (b, n_mels, frames)`, hop = window / 4."""

    def __init__(self, sample_rate: int, window: int, n_mels: int):
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        self.window_length, self.hop = window, max(window // 4, 1)
        with warnings.catch_warnings():  # tiny windows leave some high mel bands empty; harmless for a loss
            warnings.simplefilter("ignore")
            fb = mel_filter_bank(num_frequency_bins=window // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                                 max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm="slaney",
                                 mel_scale="slaney")
        self.register_buffer("fb", torch.from_numpy(fb).float().T.contiguous(), persistent=False)  # (n_mels, freq)
        self.register_buffer("window", torch.hann_window(window), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        spec = torch.stft(x.float(), self.window_length, self.hop, window=self.window, center=True,
                          return_complex=True).abs()
        return torch.einsum("mf,bft->bmt", self.fb, spec)


class MultiScaleMelLoss(nn.Module):
    """Mean over window sizes of L1 between log10 mel spectrograms (floored at 1e-5)."""

    def __init__(self, sample_rate: int, windows: tuple[int, ...]):
        super().__init__()
        self.mels = nn.ModuleList([MelSpectrogram(sample_rate, w, mel_bins_for(w)) for w in windows])

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """pred, target (b, samples) -> scalar."""
        with torch.autocast(device_type=pred.device.type, enabled=False):
            total = pred.new_zeros((), dtype=torch.float32)
            for mel in self.mels:
                a = mel(pred).clamp_min(1e-5).log10()
                b = mel(target).clamp_min(1e-5).log10()
                total = total + (a - b).abs().mean()
        return total / len(self.mels)


class STFTDiscriminator(nn.Module):
    """One scale: complex STFT (real, imag as channels) -> 2D conv stack -> logits, plus the feature maps."""

    def __init__(self, window: int, channels: int):
        super().__init__()
        self.window_length, self.hop = window, window // 4
        self.register_buffer("window", torch.hann_window(window), persistent=False)
        convs = [nn.Conv2d(2, channels, (3, 9), padding=(1, 4))]
        for d in (1, 2, 4):  # dilate along time, stride along frequency
            convs.append(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4)))
        convs.append(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1)))
        self.convs = nn.ModuleList([weight_norm(c) for c in convs])
        self.out = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        spec = torch.stft(x.float(), self.window_length, self.hop, window=self.window, return_complex=True)
        h = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # (b, 2, time, freq)
        feats = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
            feats.append(h)
        return self.out(h), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    """Several STFT discriminators at different window sizes."""

    def __init__(self, windows: tuple[int, ...], channels: int):
        super().__init__()
        self.discs = nn.ModuleList([STFTDiscriminator(w, channels) for w in windows])

    def forward(self, x: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        return [d(x) for d in self.discs]


def adversarial_losses(disc: MultiScaleSTFTDiscriminator, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
    """Hinge GAN losses trainable with ONE optimizer over codec + discriminator.

    The generator terms see the discriminator through detached parameters (so they do not train it) and the
    discriminator term sees detached fakes (so it does not train the codec): summing all three is equivalent to
    alternating generator and discriminator steps with a shared learning rate.

    Returns `disc` (discriminator hinge), `adv` (generator hinge) and `feat` (relative feature-matching L1).
    """
    frozen = {k: v.detach() for k, v in disc.named_parameters()}
    fake_out = functional_call(disc, frozen, (fake,))
    real_out = disc(real)  # trains the discriminator; its features, detached, are the matching targets
    adv = fake.new_zeros(())
    feat = fake.new_zeros(())
    for (logit, f_fake), (_, f_real) in zip(fake_out, real_out):
        adv = adv + F.relu(1 - logit).mean()
        for a, b in zip(f_fake, f_real):
            b = b.detach()
            feat = feat + (a - b).abs().mean() / b.abs().mean().clamp_min(1e-8)
    n = len(fake_out)
    d_loss = fake.new_zeros(())
    for (logit_r, _), (logit_f, _) in zip(real_out, disc(fake.detach())):
        d_loss = d_loss + F.relu(1 - logit_r).mean() + F.relu(1 + logit_f).mean()
    n_feat = sum(len(f) for _, f in fake_out)
    return {"disc": d_loss / n, "adv": adv / n, "feat": feat / n_feat}


def si_snr(est: Tensor, ref: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale-invariant SNR in dB per item, `(b, samples), (b, samples) -> (b,)` (means removed first)."""
    est = est.float() - est.float().mean(-1, keepdim=True)
    ref = ref.float() - ref.float().mean(-1, keepdim=True)
    proj = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps) * ref
    noise = est - proj
    return 10 * torch.log10((proj.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))
