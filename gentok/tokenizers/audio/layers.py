"""SEANet-style 1D conv encoder and mirrored decoder (SoundStream, Zeghidour et al. 2021; EnCodec, Défossez et al.
2022): weight-normalised convs, residual units with growing dilation, strided downsampling by `ratios`.

Two properties the codec relies on:
- **Exact padding semantics.** Every conv pads so that a length-`L` input (a multiple of the cumulative stride)
  gives `L / stride` outputs. Given per-item valid lengths, every layer zeroes its output past the item's valid
  region, so a padded batch computes exactly what each item computes alone (its right edge sees zeros either way).
- **Streaming.** With `causal=True` all padding sits on the left; passing a `cache` dict makes each conv prepend the
  tail of the previous chunk instead of zeros, so chunked encoding equals whole-signal encoding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


def length_mask(valid: Tensor, n: int, device) -> Tensor:
    """(b, 1, n) float mask, 1 on the first `valid[i]` positions."""
    return (torch.arange(n, device=device)[None] < valid.to(device)[:, None]).float()[:, None]


RESIDUAL_INIT_GAIN = 0.3


def _variance_preserving(conv: nn.Module, fan_in: int, gain: float = 1.0) -> nn.Module:
    """N(0, gain^2 / fan_in) weights and zero biases, so that an untrained stack passes its input through at about
    unit gain. PyTorch's default (uniform, variance 1 / (3 fan_in), random biases) shrinks the signal by ~0.6 per conv
    and more per transposed conv (whose fan-in it counts as cout * kernel): an untrained tiny codec then had an
    end-to-end gain of ~1e-3 with its output set by the biases, and training stalled at the spectral envelope with
    uncorrelated phase (SI-SNR ~ -30 dB)."""
    nn.init.normal_(conv.weight, std=gain / fan_in**0.5)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class Conv(nn.Module):
    """Weight-normed Conv1d, padded so that output length = input length / stride (causal: all padding on the left)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1, causal: bool = False,
                 init_gain: float = 1.0):
        super().__init__()
        self.conv = weight_norm(_variance_preserving(nn.Conv1d(cin, cout, kernel, stride, dilation=dilation),
                                                     fan_in=cin * kernel, gain=init_gain))
        self.stride = stride
        pad = (kernel - 1) * dilation + 1 - stride  # receptive field minus the stride: L -> L / stride
        self.left = pad if causal else pad // 2
        self.right = pad - self.left
        self.causal = causal

    def forward(self, x: Tensor, cache: dict | None = None) -> Tensor:
        """x (b, cin, L) with L a multiple of the stride -> (b, cout, L / stride)."""
        if cache is not None and self.causal:
            prev = cache.get(self)
            if prev is None:
                prev = x.new_zeros(x.shape[0], x.shape[1], self.left)
            x = torch.cat([prev, x], dim=-1)
            if self.left:
                cache[self] = x[..., x.shape[-1] - self.left:]
            return self.conv(x)
        return self.conv(F.pad(x, (self.left, self.right)))


class ConvTranspose(nn.Module):
    """Weight-normed ConvTranspose1d with kernel 2*stride, trimmed so that output length = input length * stride."""

    def __init__(self, cin: int, cout: int, stride: int, causal: bool = False):
        super().__init__()
        # each output sample sees kernel / stride = 2 taps per input channel
        self.conv = weight_norm(_variance_preserving(nn.ConvTranspose1d(cin, cout, 2 * stride, stride), fan_in=cin * 2))
        trim = stride  # kernel - stride extra samples
        self.right = trim if causal else trim - trim // 2
        self.left = trim - self.right

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return y[..., self.left: y.shape[-1] - self.right]


class ResidualUnit(nn.Module):
    """x + conv1x1(elu(conv_k,dilated(elu(x)))), with the valid-length mask after each conv."""

    def __init__(self, channels: int, dilation: int, kernel: int = 3, causal: bool = False):
        super().__init__()
        hidden = max(channels // 2, 1)  # SEANet's bottleneck halves the width
        self.conv1 = Conv(channels, hidden, kernel, dilation=dilation, causal=causal)
        # a small residual branch at init keeps the unit near identity, so the stack's gain stays near 1
        self.conv2 = Conv(hidden, channels, 1, causal=causal, init_gain=RESIDUAL_INIT_GAIN)

    def forward(self, x: Tensor, mask: Tensor | None = None, cache: dict | None = None) -> Tensor:
        h = self.conv1(F.elu(x), cache)
        if mask is not None:
            h = h * mask
        h = self.conv2(F.elu(h), cache)
        if mask is not None:
            h = h * mask
        return x + h


def _masked(x: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor | None]:
    if valid is None:
        return x, None
    m = length_mask(valid, x.shape[-1], x.device)
    return x * m, m


class SEANetEncoder(nn.Module):
    """(b, 1, samples) -> (b, dim, samples / hop), hop = prod(ratios)."""

    def __init__(self, channels: int, ratios: tuple[int, ...], dim: int, dilations: tuple[int, ...],
                 kernel: int = 7, causal: bool = False):
        super().__init__()
        self.ratios = tuple(ratios)
        self.stem = Conv(1, channels, kernel, causal=causal)
        self.stages = nn.ModuleList()
        ch = channels
        for r in self.ratios:
            units = nn.ModuleList([ResidualUnit(ch, d, causal=causal) for d in dilations])
            self.stages.append(nn.ModuleDict({"units": units, "down": Conv(ch, ch * 2, 2 * r, stride=r, causal=causal)}))
            ch *= 2
        self.head = Conv(ch, dim, 3, causal=causal)

    def forward(self, x: Tensor, frames: Tensor | None = None, cache: dict | None = None) -> Tensor:
        """`frames (b,)`: valid output frames per item of a padded batch (None: all valid)."""
        hop = 1
        for r in self.ratios:
            hop *= r
        valid = None if frames is None else frames * hop  # valid samples at the current resolution
        x, mask = _masked(self.stem(x, cache), valid)
        for r, stage in zip(self.ratios, self.stages):
            for unit in stage["units"]:
                x = unit(x, mask, cache)
            valid = None if valid is None else valid // r
            x, mask = _masked(stage["down"](F.elu(x), cache), valid)
        x, _ = _masked(self.head(F.elu(x), cache), valid)
        return x


class SEANetDecoder(nn.Module):
    """(b, dim, frames) -> (b, 1, frames * hop): the encoder mirrored with transposed convs."""

    def __init__(self, channels: int, ratios: tuple[int, ...], dim: int, dilations: tuple[int, ...],
                 kernel: int = 7, causal: bool = False):
        super().__init__()
        self.ratios = tuple(ratios)
        ch = channels * 2 ** len(self.ratios)
        self.stem = Conv(dim, ch, kernel, causal=causal)
        self.stages = nn.ModuleList()
        for r in reversed(self.ratios):
            units = nn.ModuleList([ResidualUnit(ch // 2, d, causal=causal) for d in dilations])
            self.stages.append(nn.ModuleDict({"up": ConvTranspose(ch, ch // 2, r, causal=causal), "units": units}))
            ch //= 2
        self.head = Conv(ch, 1, kernel, causal=causal)

    def forward(self, z: Tensor, frames: Tensor | None = None) -> Tensor:
        valid = frames
        x, mask = _masked(self.stem(z), valid)
        for r, stage in zip(reversed(self.ratios), self.stages):
            valid = None if valid is None else valid * r
            x, mask = _masked(stage["up"](F.elu(x)), valid)
            for unit in stage["units"]:
                x = unit(x, mask)
        x, _ = _masked(self.head(F.elu(x)), valid)
        return x
