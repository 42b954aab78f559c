"""A neural audio codec (SoundStream, Zeghidour et al. 2021; EnCodec, Défossez et al. 2022): a SEANet conv encoder
turns a waveform into `frame_rate` latent vectors per second, a residual VQ turns each into `q` code ids, a mirrored
decoder turns them back into audio. Training with quantizer dropout makes every prefix of the q levels a usable code,
so one model serves `bitrate(k) = k * log2(codebook_size) * frame_rate` bits per second for every k <= q.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from gentok.checkpoint import register
from gentok.config import config
from gentok.losses.audio import (
    MultiScaleMelLoss,
    MultiScaleSTFTDiscriminator,
    adversarial_losses,
    si_snr,
)
from gentok.quantizers import ResidualVQConfig, build_quantizer
from gentok.tokenizers.audio.assets import check_sample_rate, to_mono_batch
from gentok.tokenizers.audio.base import AudioTokenizer
from gentok.tokenizers.audio.layers import SEANetDecoder, SEANetEncoder
from gentok.tokenizers.base import TokenizerOutput
from gentok.tokenizers.tokens import Tokens


@config
class CodecConfig:
    sample_rate: int = 24000
    channels: int = 32  # width of the first conv; doubles at every downsampling
    ratios: tuple[int, ...] = (2, 4, 5, 8)  # encoder strides in order; hop = product (320 -> 75 Hz at 24 kHz)
    dim: int = 128  # latent width fed to the quantizer
    dilations: tuple[int, ...] = (1, 3, 9)  # residual units per stage (SEANet / DAC)
    kernel_size: int = 7
    causal: bool = False  # left-only padding: streaming, chunked encoding == whole encoding
    quantizer: ResidualVQConfig = ResidualVQConfig(dim=128, num_quantizers=32, codebook_size=1024,
                                                   quantize_dropout=True)
    mel_windows: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)  # multi-scale mel loss (DAC)
    mel_weight: float = 1.0
    # time-domain L1 divided by the batch's mean |x|, so its pull does not depend on the recording level. The mel
    # loss ignores phase; without a strong waveform term (and no discriminator) the decoder learns the right
    # spectral envelope with unrelated phase (SI-SNR ~ -30 dB). 1.0 here ~ EnCodec's lambda_t = 0.1 x 30 at -30 dBFS.
    l1_weight: float = 1.0
    discriminator: bool = False  # multi-scale STFT discriminator + feature matching
    disc_windows: tuple[int, ...] = (2048, 1024, 512, 256, 128)
    disc_channels: int = 32
    adv_weight: float = 3.0  # EnCodec's lambda_g
    feat_weight: float = 3.0  # EnCodec's lambda_feat

    def __post_init__(self):
        check_sample_rate(self.sample_rate)
        if not isinstance(self.quantizer, ResidualVQConfig):
            raise ValueError(f"the codec needs a ResidualVQConfig quantizer, got {type(self.quantizer).__name__}")
        if self.quantizer.dim != self.dim:
            raise ValueError(f"quantizer.dim ({self.quantizer.dim}) must equal the latent dim ({self.dim})")
        if not self.ratios or any(r < 1 for r in self.ratios) or not self.dilations or min(self.dilations) < 1:
            raise ValueError("ratios and dilations must be non-empty tuples of positive ints")
        if self.channels < 1 or self.dim < 1 or self.kernel_size < 1:
            raise ValueError("channels, dim and kernel_size must be >= 1")
        for name in ("mel_windows", "disc_windows"):
            windows = getattr(self, name)
            if not windows or any(w < 4 or w % 4 for w in windows):
                raise ValueError(f"{name} must be non-empty multiples of 4, got {windows}")
        if min(self.mel_weight, self.l1_weight, self.adv_weight, self.feat_weight) < 0:
            raise ValueError("loss weights must be >= 0")

    @property
    def hop(self) -> int:
        return math.prod(self.ratios)


def _rvq(dim, levels, size, decay=0.99):
    return ResidualVQConfig(dim=dim, num_quantizers=levels, codebook_size=size, decay=decay, quantize_dropout=True)


PRESETS = {
    # CPU demo: 16 kHz, hop 160 -> 100 frames/s, 6 levels x 8 bits -> 0.8 .. 4.8 kbps
    "tiny": CodecConfig(sample_rate=16000, channels=8, ratios=(4, 5, 8), dim=32, dilations=(1, 3),
                        quantizer=_rvq(32, 6, 256, 0.95), mel_windows=(32, 64, 128, 256, 512, 1024)),
    "tiny-causal": CodecConfig(sample_rate=16000, channels=8, ratios=(4, 5, 8), dim=32, dilations=(1, 3), causal=True,
                               quantizer=_rvq(32, 6, 256, 0.95), mel_windows=(32, 64, 128, 256, 512, 1024)),
    # shaped like SoundStream / EnCodec at 16 kHz: 50 frames/s, 12 x 10 bits -> 0.5 .. 6 kbps (GPU)
    "16khz": CodecConfig(sample_rate=16000, channels=32, ratios=(2, 4, 5, 8), dim=128, quantizer=_rvq(128, 12, 1024),
                         discriminator=True),
    # shaped like EnCodec 24 kHz: 75 frames/s, 32 x 10 bits -> 0.75 .. 24 kbps (GPU)
    "24khz": CodecConfig(sample_rate=24000, channels=32, ratios=(2, 4, 5, 8), dim=128, quantizer=_rvq(128, 32, 1024),
                         discriminator=True),
}


def preset(name: str) -> CodecConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown codec preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]


@register("audio_codec")
class AudioCodec(AudioTokenizer):
    """Waveform <-> residual codes, ids `(b, frames, q)`; see the module docstring and `audio/base.py`."""

    config_class = CodecConfig

    def __init__(self, config: CodecConfig):
        super().__init__()
        self.config = c = config
        self.encoder = SEANetEncoder(c.channels, c.ratios, c.dim, c.dilations, c.kernel_size, c.causal)
        self.quantizer = build_quantizer(c.quantizer)
        self.decoder = SEANetDecoder(c.channels, c.ratios, c.dim, c.dilations, c.kernel_size, c.causal)
        self.mel_loss = MultiScaleMelLoss(c.sample_rate, c.mel_windows)
        self.discriminator = MultiScaleSTFTDiscriminator(c.disc_windows, c.disc_channels) if c.discriminator else None

    # -- rates ----------------------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop(self) -> int:
        return self.config.hop

    @property
    def num_quantizers(self) -> int:
        return self.quantizer.num_codebooks

    @property
    def vocab_size(self) -> int:
        return self.quantizer.codebook_size

    # -- training -------------------------------------------------------------------------------------------------
    def forward(self, wav: Tensor, n_quantizers: int | None = None) -> TokenizerOutput:
        """Training pass on equal-length clips `(b, samples)` at the model's sample rate.

        In training mode the quantizer drops a random number of trailing levels per batch (quantizer dropout);
        `n_quantizers` fixes the depth instead (evaluation at a given bitrate).
        """
        x, _ = to_mono_batch(wav)
        x = x.to(self._device())
        n = x.shape[-1]
        z = self.encoder(self._pad(x)[:, None]).transpose(1, 2)  # (b, frames, dim)
        k = None if n_quantizers is None else self._check_n(n_quantizers)
        q = self.quantizer(z, n_quantizers=k)
        recon = self.decoder(q.quantized.transpose(1, 2))[:, 0, :n]
        c = self.config
        mel = self.mel_loss(recon, x)
        l1 = F.l1_loss(recon, x) / x.abs().mean().clamp_min(1e-5)
        loss = c.mel_weight * mel + c.l1_weight * l1 + q.loss
        metrics = {"mel_loss": mel.detach(), "l1": l1.detach(), "quantizer_loss": q.loss.detach(),
                   **{f"code_{k}": v for k, v in q.metrics.items()}}
        if self.discriminator is not None and self.training:
            adv = adversarial_losses(self.discriminator, x, recon)
            loss = loss + adv["disc"] + c.adv_weight * adv["adv"] + c.feat_weight * adv["feat"]
            metrics.update({f"gan_{k}": v.detach() for k, v in adv.items()})
        with torch.no_grad():
            metrics["si_snr"] = si_snr(recon.detach(), x).mean()
        return TokenizerOutput(recon, q.indices, loss, metrics)  # ids (b, frames, q), PAD_ID on dropped levels

    # -- the API --------------------------------------------------------------------------------------------------
    def _encode_frames(self, x: Tensor, frames: Tensor, k: int) -> Tensor:
        # per-layer masks make every item of a padded batch compute exactly what it computes alone
        full = bool((frames == x.shape[-1] // self.hop).all())
        z = self.encoder(x[:, None], None if full else frames).transpose(1, 2)  # (b, frames, dim)
        mask = None if full else (torch.arange(z.shape[1])[None] < frames[:, None]).to(z.device)
        return self.quantizer.encode(z, mask)[..., :k]  # (b, frames, k)

    def _decode_frames(self, ids: Tensor, frames: Tensor) -> Tensor:
        full = bool((frames == ids.shape[1]).all())
        z = self.quantizer.decode(ids.to(self._device())).transpose(1, 2)  # (b, dim, frames)
        return self.decoder(z, None if full else frames)[:, 0]

    @torch.no_grad()
    def encode_chunks(self, chunks: Iterable[Tensor], n_quantizers: int | None = None) -> Iterator[Tensor]:
        """Streaming encoder (causal models): each chunk `(b, L)` at the model rate, L a multiple of `hop` except
        for the last, yields its ids `(b, ceil(L / hop), k)`; concatenated along frames (dim 1) they equal the ids of
        `encode` of the whole signal."""
        if not self.config.causal:
            raise ValueError("chunked encoding needs a causal codec (CodecConfig(causal=True)); this one looks ahead")
        k = self._check_n(n_quantizers)
        cache: dict = {}
        ended = False
        for chunk in chunks:
            if ended:
                raise ValueError(f"only the last chunk may have a length that is not a multiple of hop ({self.hop})")
            x, _ = to_mono_batch(chunk)
            if x.shape[-1] % self.hop:
                x, ended = self._pad(x), True  # zero-pad the tail exactly as `encode` pads the whole signal
            z = self.encoder(x.to(self._device())[:, None], cache=cache).transpose(1, 2)
            yield self.quantizer.encode(z)[..., :k].contiguous()

    def encode_chunked(self, wav, sample_rate: int | None = None, chunk_samples: int | None = None,
                       n_quantizers: int | None = None, padding_mask: Tensor | None = None,
                       lengths: Tensor | None = None) -> Tokens:
        """`encode` of long signals in chunks of `chunk_samples` at the model rate (a multiple of `hop`; default
        about one second) with bounded memory; the same arguments and the same `Tokens` as `encode`.

        A causal frame sees only the past, so the real frames of a zero-padded ragged batch equal each item's own.
        """
        if chunk_samples is None:
            chunk_samples = self.hop * max(1, round(self.frame_rate))
        if isinstance(chunk_samples, bool) or not isinstance(chunk_samples, int) or chunk_samples < self.hop \
                or chunk_samples % self.hop:
            raise ValueError(f"chunk_samples must be a positive multiple of the hop ({self.hop}), got {chunk_samples}")
        x, lengths = self._prepare(wav, sample_rate, lengths, padding_mask)
        frames = torch.tensor([self.num_frames(n) for n in lengths])
        parts = (x[:, i:i + chunk_samples] for i in range(0, x.shape[-1], chunk_samples))
        return self._tokens(torch.cat(list(self.encode_chunks(parts, n_quantizers)), dim=1), frames)

    # -- internals ------------------------------------------------------------------------------------------------
    def _pad(self, x: Tensor) -> Tensor:
        return F.pad(x, (0, self.num_frames(x.shape[-1]) * self.hop - x.shape[-1]))
