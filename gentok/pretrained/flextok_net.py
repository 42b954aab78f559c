"""The network of FlexTok's official checkpoints (apple/ml-flextok; hub `EPFL-VILAB/flextok_*`) in plain PyTorch.

The official network works in the latent space of a diffusers `AutoencoderKL`: an encoder (latent patches + K
causal registers, pre-norm blocks with QK-norm and SwiGLU) whose registers are FSQ-quantized into K ids, and a
rectified-flow decoder (noisy latent patches + the kept registers, time-conditioned adaLN with one modulation for
patches and one for registers) that predicts the velocity noise - x0. `OfficialFlexTokNet` is that network written
with plain PyTorch ops on batched tensors (their code packs a batch into one sequence with a block-diagonal
FlexAttention mask; per image the computation is the same), so it runs on any device without compiling. The FSQ
(`gentok.quantizers.FSQ`), the sampler and the guidance (`gentok.sampling.flow`) are gentok's own, composed by the
tokenizer `gentok.pretrained.flextok_model.OfficialFlexTok`; the converter is `gentok.pretrained.flextok`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gentok.config import config


@config
class OfficialFlexTokConfig:
    """The official FlexTok network and its decoding defaults; the converter reads the sizes from the snapshot."""

    image_size: int = 256
    latent_channels: int = 16  # the VAE's latent channels
    vae_channels: tuple[int, ...] = (128, 256, 512, 512)  # SD-VAE block widths; downsampling 2^(len - 1)
    vae_layers_per_block: int = 2
    vae_norm_groups: int = 32
    scaling_factor: float = 0.88  # latents are multiplied by it after encoding, divided before decoding
    patch_size: int = 2  # latent patches
    pos_grid: tuple[int, int] = (16, 16)  # size of the sin-cos position tables (in patches)
    registers: int = 256  # K
    levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)  # FSQ levels: 64000 ids
    enc_dim: int = 1152
    enc_depth: int = 18
    dec_dim: int = 1152
    dec_depth: int = 18
    head_dim: int = 64
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    proj_bias: bool = False
    mlp_bias: bool = False
    enc_head_norm: bool = True  # LayerNorm before the encoder's linear head
    dec_head_norm: bool = True
    ada_groups: int = 2  # adaLN modulations per decoder block: one for patches, one for registers
    freq_dim: int = 256  # sinusoidal time features before the time MLP
    max_timestep: float = 1.0
    learned_null: bool = True  # guidance's null condition: a learned token (True) or zeros
    sample_steps: int = 25  # default Euler steps of `OfficialFlexTok.decode`
    guidance: float = 1.0  # default classifier-free guidance scale of `decode` (1 = off)

    def __post_init__(self):
        if self.enc_dim % self.head_dim or self.dec_dim % self.head_dim:
            raise ValueError(f"widths {self.enc_dim}, {self.dec_dim} are not multiples of head_dim {self.head_dim}")
        if self.sample_steps < 1:
            raise ValueError(f"sample_steps must be >= 1, got {self.sample_steps}")
        if self.ada_groups not in (1, 2):
            raise ValueError(f"ada_groups must be 1 or 2, got {self.ada_groups}")
        down = 2 ** (len(self.vae_channels) - 1)
        if self.image_size % (down * self.patch_size):
            raise ValueError(f"image_size {self.image_size} is not a multiple of {down * self.patch_size}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.vae_channels) - 1)

    @property
    def latent_grid(self) -> int:
        return self.image_size // self.downsample


def _norm(x: Tensor) -> Tensor:
    """LayerNorm without affine parameters, computed in float32 (their `Fp32LayerNorm`)."""
    return F.layer_norm(x.float(), x.shape[-1:]).type_as(x)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class OfficialBlock(nn.Module):
    """Pre-norm block: QK-normed attention (scale 8 / head_dim, muP) and a SwiGLU MLP, optional adaLN-zero."""

    def __init__(self, dim: int, c: OfficialFlexTokConfig, ada_groups: int = 0):
        super().__init__()
        self.heads, self.scale = dim // c.head_dim, 8.0 / c.head_dim
        self.qkv = nn.Linear(dim, 3 * dim, bias=c.qkv_bias)  # their wq, wk, wv stacked
        self.proj = nn.Linear(dim, dim, bias=c.proj_bias)
        hidden = int(2 * int(dim * c.mlp_ratio) / 3)
        self.fc1 = nn.Linear(dim, hidden, bias=c.mlp_bias)
        self.fc3 = nn.Linear(dim, hidden, bias=c.mlp_bias)  # the gate
        self.fc2 = nn.Linear(hidden, dim, bias=c.mlp_bias)
        self.ada = nn.Linear(dim, ada_groups * 6 * dim) if ada_groups else None

    def forward(self, x: Tensor, mask: Tensor | None = None, mod: tuple[Tensor, ...] | None = None) -> Tensor:
        """x (b, n, d); mask bool (n, n), True = may attend; mod: 6 tensors (b, n, d) from `ada`."""
        h = _norm(x)
        if mod is not None:
            gate_msa, gate_mlp, shift_msa, scale_msa, shift_mlp, scale_mlp = mod
            h = _modulate(h, shift_msa, scale_msa)
        q, k, v = rearrange(self.qkv(h), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        a = F.scaled_dot_product_attention(_norm(q), _norm(k), v, attn_mask=mask, scale=self.scale)
        a = self.proj(rearrange(a, "b h n d -> b n (h d)"))
        x = x + (gate_msa * a if mod is not None else a)
        h = _norm(x)
        if mod is not None:
            h = _modulate(h, shift_mlp, scale_mlp)
        m = self.fc2(F.silu(self.fc1(h)) * self.fc3(h))
        return x + (gate_mlp * m if mod is not None else m)


def time_features(t: Tensor, dim: int, max_timestep: float, max_period: float = 256.0) -> Tensor:
    """Sinusoidal features of flow times t (b,) in [0, max_timestep]: (b, dim), cosines first (as trained).

    diffusers' `get_timestep_embedding` computes the same features but multiplies in another order, which moves them
    by up to 6e-5 when max_timestep is 1 (the published checkpoints'); the converted network must reproduce the
    official outputs, so it keeps the official order."""
    half = dim // 2
    freqs = (1000.0 / max_timestep) * torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    out = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(out, (0, dim % 2))



def _sincos_grid(h: int, w: int, dim: int) -> Tensor:
    """(1, dim, h, w) 2D sin-cos table for a freshly built network (a converted one loads the checkpoint's)."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / max(quarter, 1))
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    parts = [f(pos[..., None] * omega) for pos in (xs, ys) for f in (torch.sin, torch.cos)]
    table = torch.cat(parts, dim=-1)  # (h, w, 4 * quarter)
    table = F.pad(table, (0, dim - table.shape[-1]))
    return rearrange(table, "h w d -> 1 d h w")



class OfficialFlexTokNet(nn.Module):
    """The official FlexTok network (VAE, register encoder, rectified-flow decoder) on batched tensors; the FSQ
    between them is gentok's (`OfficialFlexTok.quantizer`), which has no weights."""

    def __init__(self, c: OfficialFlexTokConfig):
        super().__init__()
        from diffusers.models import AutoencoderKL

        self.config = c
        n = len(c.vae_channels)
        self.vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                                 up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(c.vae_channels),
                                 layers_per_block=c.vae_layers_per_block, act_fn="silu",
                                 latent_channels=c.latent_channels, norm_num_groups=c.vae_norm_groups)
        self.vae.requires_grad_(False)  # frozen in the official training too
        patch_dim = c.latent_channels * c.patch_size**2
        gh, gw = c.pos_grid
        # encoder
        self.enc_patch = nn.Linear(patch_dim, c.enc_dim)
        self.register_buffer("enc_pos", _sincos_grid(gh, gw, c.enc_dim))  # (1, d, gh, gw)
        self.registers = nn.Parameter(torch.randn(c.registers, c.enc_dim) * 0.02)
        self.enc_blocks = nn.ModuleList(OfficialBlock(c.enc_dim, c) for _ in range(c.enc_depth))
        self.enc_head = nn.Linear(c.enc_dim, len(c.levels))
        # decoder
        self.dec_in = nn.Linear(len(c.levels), c.dec_dim)
        self.dec_reg_pos = nn.Parameter(torch.randn(c.registers, c.dec_dim) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(c.dec_dim) * 0.02)
        self.null_token = nn.Parameter(torch.randn(c.dec_dim) * 0.02) if c.learned_null else None
        self.dec_patch = nn.Linear(patch_dim, c.dec_dim)
        self.register_buffer("dec_pos", _sincos_grid(gh, gw, c.dec_dim))
        self.time_in = nn.Linear(c.freq_dim, c.dec_dim)
        self.time_out = nn.Linear(c.dec_dim, c.dec_dim)
        self.dec_blocks = nn.ModuleList(OfficialBlock(c.dec_dim, c, c.ada_groups) for _ in range(c.dec_depth))
        self.head_ada = nn.Linear(c.dec_dim, 2 * c.dec_dim)
        self.head = nn.Linear(c.dec_dim, patch_dim)

    # -- pieces ------------------------------------------------------------------------------------------------
    def _patches(self, latents: Tensor, proj: nn.Linear, pos: Tensor) -> Tensor:
        """(b, C, h, w) -> (b, (h/p)(w/p), d) with the position table cropped to the grid."""
        p = self.config.patch_size
        x = proj(rearrange(latents, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p, p2=p))
        gh, gw = latents.shape[-2] // p, latents.shape[-1] // p
        return x + rearrange(pos[:, :, :gh, :gw], "o d h w -> o (h w) d")

    def vae_encode(self, images: Tensor) -> Tensor:
        """Images (b, 3, S, S) in [-1, 1] -> scaled latents (b, C, S/f, S/f), the posterior mode."""
        return self.vae.encode(images).latent_dist.mode() * self.config.scaling_factor

    def vae_decode(self, latents: Tensor) -> Tensor:
        return self.vae.decode(latents / self.config.scaling_factor).sample

    def encode_latents(self, latents: Tensor) -> Tensor:
        """Scaled VAE latents (b, C, h, w) -> register values before FSQ (b, K, len(levels))."""
        x = self._patches(latents, self.enc_patch, self.enc_pos)
        b, n, _ = x.shape
        k = self.config.registers
        x = torch.cat([x, self.registers.expand(b, -1, -1).to(x.dtype)], dim=1)
        # patches see patches only; register i sees every patch and registers <= i
        i = torch.arange(n + k, device=x.device)
        mask = (i[None, :] < n) | (i[None, :] <= i[:, None])
        for block in self.enc_blocks:
            x = block(x, mask)
        regs = x[:, n:]
        return self.enc_head(_norm(regs) if self.config.enc_head_norm else regs)

    def registers_for(self, codes: Tensor, keep: Tensor) -> Tensor:
        """FSQ codes (b, n <= K, len(levels)) in [-1, 1] (any value past `keep`) and keep lengths (b,) -> decoder
        registers (b, K, d); positions >= keep hold the mask token, so what is dropped never reaches the decoder."""
        b, n, _ = codes.shape
        k = self.config.registers
        full = torch.zeros(b, k, len(self.config.levels), device=codes.device)
        full[:, :n] = codes
        regs = self.dec_in(full) + self.dec_reg_pos
        kept = torch.arange(k, device=codes.device)[None, :] < keep[:, None]
        return torch.where(kept[..., None], regs, self.mask_token.to(regs.dtype))

    def null_registers(self, like: Tensor) -> Tensor:
        """The null condition of guidance: every register the learned null token (or zeros)."""
        return (self.null_token.to(like.dtype).expand_as(like) if self.null_token is not None
                else torch.zeros_like(like))

    def velocity(self, noisy: Tensor, t: Tensor, registers: Tensor) -> Tensor:
        """Noisy latents (b, C, h, w) at flow time t (b,) (1 = noise) and registers (b, K, d) -> velocity
        noise - x0, shaped like `noisy`."""
        c = self.config
        x = self._patches(noisy, self.dec_patch, self.dec_pos)
        b, n, d = x.shape
        x = torch.cat([x, registers.to(x.dtype)], dim=1)
        temb = F.silu(self.time_in(time_features(t, c.freq_dim, c.max_timestep)))
        temb = self.time_out(temb)
        act = F.silu(temb)
        sizes = torch.tensor([n, registers.shape[1]], device=x.device)
        for block in self.dec_blocks:
            mod = rearrange(block.ada(act), "b (g d) -> b g d", g=c.ada_groups)  # g: patches, registers
            mod = mod.repeat_interleave(sizes, dim=1) if c.ada_groups == 2 else mod.expand(b, x.shape[1], -1)
            x = block(x, None, mod.chunk(6, dim=-1))
        out = x[:, :n]
        out = _norm(out) if c.dec_head_norm else out
        shift, scale = self.head_ada(act)[:, None].chunk(2, dim=-1)
        out = self.head(_modulate(out, shift, scale))
        p, gw = c.patch_size, noisy.shape[-1] // c.patch_size
        return rearrange(out, "b (h w) (p1 p2 c) -> b c (h p1) (w p2)", w=gw, p1=p, p2=p)
