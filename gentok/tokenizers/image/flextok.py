"""FlexTok: "Resampling Images into 1D Token Sequences of Flexible Length" (Bachmann et al. 2025).

A ViT encoder reads image patches plus K register tokens (causal among themselves, so register i summarises what
registers < i left out); the registers are FSQ-quantized into K ids. Training applies nested dropout: per example a
length k is drawn from a schedule and registers k..K-1 are replaced by one learned mask token before the decoder, so
every prefix ids[:, :k] is a complete description of the image, coarse to fine. The decoder is a rectified flow:
a transformer, adaLN-conditioned on the flow time, maps noisy patches to a clean-image estimate (and so a velocity)
given the kept registers; sampling runs diffusers' `FlowMatchEulerDiscreteScheduler` (`gentok.sampling.flow`), with
optional classifier-free guidance learned by dropping all registers for a fraction of training examples. The encoder
half is `gentok.nn.LatentEncoder`, shared with TiTok.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import Tensor, nn

from gentok.checkpoint import register
from gentok.config import config
from gentok.nn import (LatentEncoder, Transformer, check_latent_sizes, init_weights, legacy_encoder_hook, patchify,
                       unpatchify)
from gentok.quantizers import FSQConfig, QuantizerConfig, build_quantizer
from gentok.sampling.flow import flow_sample, guided, make_scheduler
from gentok.tokenizers.base import Tokenizer, TokenizerOutput
from gentok.tokenizers.image.assets import ImageAssetsMixin, to_image_batch
from gentok.tokenizers.tokens import Tokens

SCHEDULES = ("pow2", "uniform", "none")


@config
class FlexTokConfig:
    image_size: int = 256
    patch_size: int = 16
    num_tokens: int = 256  # K: the longest token sequence; any prefix 1..K decodes
    width: int = 768
    enc_depth: int = 12
    dec_depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    quantizer: QuantizerConfig = FSQConfig(dim=6, levels=(8, 8, 8, 5, 5, 5))  # paper: 64000 codes, ~16 bits
    causal_registers: bool = True  # register i attends to patches and registers <= i only
    # learned linear register<->patch mixing initialised as a coarse-to-fine region tree (see `region_tree`):
    # register 0 pools the whole image, 1-2 its halves, 3-6 quarters, ... and the decoder spreads each kept register
    # back over its region. Attention starts out uniform, so without it every register of a small, briefly trained
    # model summarises the same global statistics and the registers collapse onto one another
    token_mixing: bool = False
    nested_dropout: str = "pow2"  # keep-length schedule: "pow2" (1, 2, 4, ..., K), "uniform" (1..K), "none" (K)
    cfg_dropout: float = 0.1  # fraction of training examples decoded from no tokens (learns guidance's v_uncond)
    time_sampling: str = "logit_normal"  # training sigmas: "logit_normal" (SD3) or "uniform"
    # fraction of training examples at sigma = 1 exactly, the first sampling step: there the tokens are the decoder's
    # only information, so these examples give the encoder the direct reconstruction signal a deterministic
    # tokenizer gets (the flow loss at sigma = 1 is the MSE of the clean-image estimate); without them the encoder
    # of a small, briefly trained model collapses to a few codes that the denoiser ignores
    sigma_one_fraction: float = 0.25
    # SD3's time shift s -> shift * s / (1 + (shift - 1) * s), applied to the training sigmas and (through the
    # scheduler) to the sampling sigmas alike; > 1 moves both toward high noise, where the tokens decide the image
    shift: float = 1.0
    min_loss_sigma: float = 0.05  # floor of sigma in the flow loss's 1 / sigma^2 weight (see `forward`)
    sample_steps: int = 25  # default Euler steps for `decode`
    guidance: float = 1.0  # default classifier-free guidance scale for `decode` (1 = off)

    def __post_init__(self):
        check_latent_sizes(self)
        if self.nested_dropout not in SCHEDULES:
            raise ValueError(f"nested_dropout must be one of {SCHEDULES}, got {self.nested_dropout!r}")
        if self.time_sampling not in ("logit_normal", "uniform"):
            raise ValueError(f"time_sampling must be 'logit_normal' or 'uniform', got {self.time_sampling!r}")
        if not 0.0 <= self.sigma_one_fraction <= 1.0:
            raise ValueError(f"sigma_one_fraction must lie in [0, 1], got {self.sigma_one_fraction}")
        if not 0.0 <= self.cfg_dropout < 1.0:
            raise ValueError(f"cfg_dropout must lie in [0, 1), got {self.cfg_dropout}")
        if self.sample_steps < 1 or self.shift <= 0:
            raise ValueError("sample_steps must be >= 1 and shift > 0")
        if not 0.0 < self.min_loss_sigma <= 1.0:
            raise ValueError(f"min_loss_sigma must lie in (0, 1], got {self.min_loss_sigma}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


PRESETS = {
    # CPU demo: 64x64 crops, up to 32 tokens x ~16 bits
    "tiny": FlexTokConfig(image_size=64, patch_size=8, num_tokens=32, width=128, enc_depth=4, dec_depth=4, heads=4,
                          quantizer=FSQConfig(dim=6, levels=(8, 8, 8, 5, 5, 5), saturation_weight=1.0),
                          token_mixing=True, sample_steps=16, shift=3.0),
    # the paper's d12-d12 at 256 px (GPU)
    "d12-d12": FlexTokConfig(),
    "d18-d18": FlexTokConfig(width=1152, enc_depth=18, dec_depth=18, heads=18),
}


def region_tree(num_tokens: int, grid: int) -> Tensor:
    """(num_tokens, grid * grid) 0/1 matrix: token i covers node i of a k-d tree over the patch grid (raster order).

    Node 0 is the whole grid; node i's children 2i + 1 and 2i + 2 halve its longer side (a one-patch node's children
    cover it whole). Prefixes of the token sequence therefore go coarse to fine: 1 token the image, 3 its halves, 7
    its quarters, and so on.
    """
    boxes = [(0, grid, 0, grid)]  # (row0, row1, col0, col1), heap order
    while len(boxes) < num_tokens:
        r0, r1, c0, c1 = boxes[(len(boxes) - 1) // 2]
        left = len(boxes) % 2 == 1
        if r1 - r0 >= c1 - c0 and r1 - r0 > 1:
            mid = (r0 + r1) // 2
            boxes.append((r0, mid, c0, c1) if left else (mid, r1, c0, c1))
        elif c1 - c0 > 1:
            mid = (c0 + c1) // 2
            boxes.append((r0, r1, c0, mid) if left else (r0, r1, mid, c1))
        else:
            boxes.append((r0, r1, c0, c1))
    m = torch.zeros(num_tokens, grid, grid)
    for i, (r0, r1, c0, c1) in enumerate(boxes):
        m[i, r0:r1, c0:c1] = 1.0
    return m.reshape(num_tokens, grid * grid)


def keep_lengths(schedule: str, batch: int, num_tokens: int, generator: torch.Generator | None = None,
                 device=None) -> Tensor:
    """Per-example number of kept tokens (b,) long in [1, K], drawn from `schedule` (see `FlexTokConfig`)."""
    if schedule == "none":
        return torch.full((batch,), num_tokens, dtype=torch.long, device=device)
    if schedule == "uniform":
        choices = torch.arange(1, num_tokens + 1)
    elif schedule == "pow2":
        choices = sorted({min(2**i, num_tokens) for i in range(num_tokens.bit_length() + 1)})
        choices = torch.tensor(choices)
    else:
        raise ValueError(f"unknown nested-dropout schedule {schedule!r}; choose from {SCHEDULES}")
    pick = torch.randint(len(choices), (batch,), generator=generator)
    return choices[pick].to(device)


@register("flextok")
class FlexTok(ImageAssetsMixin, Tokenizer):
    config_class = FlexTokConfig
    decodes_prefixes = True  # every prefix ids[:, :k], 1 <= k <= K, decodes: evaluation reports quality per k

    @classmethod
    def upgrade_config(cls, config: dict) -> tuple[type, dict]:
        """Directories saved before the official network had a class of its own hold a FlexTokConfig whose
        `official` field describes it: they load as `OfficialFlexTok` (same weights, same ids)."""
        if not isinstance(config, dict) or config.get("official") is None:
            return cls, config
        from gentok.pretrained.flextok_model import OfficialFlexTok

        official = dict(config["official"])
        for key in ("sample_steps", "guidance"):  # the decoding defaults lived on the outer config
            if key in config:
                official[key] = config[key]
        return OfficialFlexTok, official

    def __init__(self, config: FlexTokConfig):
        super().__init__()
        self.config = c = config
        scale = c.width**-0.5
        patch_dim = c.patch_size * c.patch_size * 3
        tree = region_tree(c.num_tokens, c.image_size // c.patch_size) if c.token_mixing else None  # (K, N) 0/1
        # encoder: patches + K registers
        self.encoder = LatentEncoder(c.image_size, c.patch_size, c.width, c.enc_depth, c.heads, c.mlp_ratio,
                                     c.num_tokens, c.quantizer.dim, causal_latents=c.causal_registers,
                                     mix=tree / tree.sum(1, keepdim=True) if tree is not None else None)
        self.quantizer = build_quantizer(c.quantizer)
        if self.quantizer.num_codebooks != 1:
            raise ValueError("FlexTok needs a single-level quantizer (one id per token)")
        # decoder: K registers (kept ones from the codes, the rest the mask token) + noisy patches, adaLN on time
        self.from_code = nn.Linear(c.quantizer.dim, c.width)
        self.mask_token = nn.Parameter(torch.randn(c.width) * scale)
        self.dec_reg_pos = nn.Parameter(torch.randn(c.num_tokens, c.width) * scale)
        self.noisy_embed = nn.Linear(patch_dim, c.width)
        self.dec_pos = nn.Parameter(torch.randn(c.num_patches, c.width) * scale)
        self.time_proj = Timesteps(c.width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(c.width, c.width)
        self.decoder = Transformer(c.width, c.dec_depth, c.heads, c.mlp_ratio, cond_dim=c.width)
        self.to_pixels = nn.Linear(c.width, patch_dim)
        if c.token_mixing:
            self.dec_mix = nn.Parameter(tree.T / tree.T.sum(1, keepdim=True).clamp_min(1))
        init_weights(self.encoder.transformer)
        init_weights(self.decoder)
        for block in self.decoder.blocks:  # init_weights overwrote adaLN's zero init: blocks must start as identity
            nn.init.zeros_(block.ada[1].weight)
            nn.init.zeros_(block.ada[1].bias)
        nn.init.zeros_(self.to_pixels.weight)  # DiT-style zero init: the first clean-patch prediction is 0 (grey)
        nn.init.zeros_(self.to_pixels.bias)
        # checkpoints saved before the encoder was shared keep loading
        self.register_load_state_dict_pre_hook(legacy_encoder_hook("registers"))

    # -- contract -------------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def tokens_per_item(self) -> int:
        """K, the full length; `decode` also takes any prefix of 1..K tokens per item."""
        return self.config.num_tokens

    @property
    def default_decode_options(self) -> dict:
        """The sampling options `decode` uses when not given."""
        return {"steps": self.config.sample_steps, "guidance": self.config.guidance}

    def forward(self, images: Tensor) -> TokenizerOutput:
        """Training pass on images (b, 3, S, S) in [0, 1]: nested dropout + flow-matching loss.

        `recon` is the clean-image estimate at the sampled noise level (cheap, for logging).
        """
        c = self.config
        x = to_image_batch(images, c.image_size)
        b = x.shape[0]
        q = self.quantizer(self._encode_latents(x))
        keep = keep_lengths(c.nested_dropout, b, c.num_tokens, device=x.device)
        if self.training and c.cfg_dropout > 0:
            keep = torch.where(torch.rand(b, device=x.device) < c.cfg_dropout, torch.zeros_like(keep), keep)
        registers = self._decoder_registers(q.quantized, keep)
        x0 = patchify(x * 2 - 1, c.patch_size)  # (b, N, p*p*3) in [-1, 1]
        if c.time_sampling == "logit_normal":
            sigma = torch.sigmoid(torch.randn(b, device=x.device))
        else:
            sigma = torch.rand(b, device=x.device)
        sigma = c.shift * sigma / (1 + (c.shift - 1) * sigma)  # the scheduler's shift: train where we sample
        sigma = torch.where(torch.rand(b, device=x.device) < c.sigma_one_fraction, torch.ones_like(sigma), sigma)
        noise = torch.randn_like(x0)
        s = sigma[:, None, None]
        x_t = s * noise + (1 - s) * x0
        x0_hat = self.predict_x0(x_t, sigma, registers)
        # the flow-matching loss ||v_hat - v||^2 = ||x0_hat - x0||^2 / sigma^2, with sigma floored (as in Li & He
        # 2025) so the nearly clean end does not dominate
        weight = sigma.clamp_min(c.min_loss_sigma).float() ** -2
        flow = ((x0_hat.float() - x0.float()).square().mean(dim=(1, 2)) * weight).mean()
        loss = flow + q.loss
        with torch.no_grad():
            recon = (unpatchify(x0_hat.detach().clamp(-1, 1), c.patch_size, c.image_size, c.image_size) + 1) / 2
        metrics = {"flow_loss": flow.detach(), "quantizer_loss": q.loss.detach(), "keep_mean": keep.float().mean(),
                   **{f"code_{k}": v for k, v in q.metrics.items()}}
        return TokenizerOutput(recon, q.indices, loss, metrics)

    @torch.no_grad()
    def encode(self, images) -> Tokens:
        """Images (tensor (b, 3, S, S) in [0, 1], PIL images or paths) -> `Tokens` with ids (b, K); every prefix
        decodes."""
        x = to_image_batch(images, self.config.image_size)
        return self.make_tokens(self.quantizer.encode(self._encode_latents(x)))

    @torch.no_grad()
    def decode(self, tokens, steps: int | None = None, guidance: float | None = None, seed: int = 0,
               generator: torch.Generator | None = None) -> Tensor:
        """Token prefixes -> images (b, 3, S, S) in [0, 1], by flow sampling.

        Args:
            tokens: `Tokens` whose items keep their first 1..K ids (`lengths`, `PAD_ID` past them), or bare ids
                (b, k) with 1 <= k <= K (the first k ids of `encode`'s output; padding marks shorter items).
            steps: Euler steps (default `config.sample_steps`).
            guidance: classifier-free guidance scale (default `config.guidance`; 1 = off).
            seed: seeds the starting noise, the same for every item, so an item decodes to the same image alone or
                in any batch; ignored when `generator` is given (which draws one noise per item of the batch).
        """
        c = self.config
        t = self.as_prefix_tokens(tokens, c.num_tokens)
        b, n = t.ids.shape
        steps = c.sample_steps if steps is None else int(steps)
        guidance = c.guidance if guidance is None else float(guidance)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        device = t.ids.device
        codes = torch.zeros(b, c.num_tokens, c.quantizer.dim, device=device)
        codes[:, :n] = self.quantizer.decode(t.ids.clamp_min(0))  # padding becomes code 0, then the mask token
        cond = self._decoder_registers(codes, t.lengths)
        uncond = self._decoder_registers(codes, torch.zeros(b, dtype=torch.long, device=device))
        shape = (c.num_patches, c.patch_size**2 * 3)
        if generator is None:
            noise = torch.randn(1, *shape, generator=torch.Generator(device=device).manual_seed(seed), device=device)
            noise = noise.expand(b, *shape)
        else:
            noise = torch.randn(b, *shape, generator=generator, device=device)
        velocity = guided(lambda x, s: self.velocity(x, s, cond), lambda x, s: self.velocity(x, s, uncond), guidance)
        x0 = flow_sample(velocity, noise, steps, make_scheduler(c.shift))
        return (unpatchify(x0, c.patch_size, c.image_size, c.image_size).clamp(-1, 1) + 1) / 2

    # -- internals ------------------------------------------------------------------------------------------------
    def _encode_latents(self, x: Tensor) -> Tensor:
        return self.encoder(x * 2 - 1)  # (b, K, code_dim); the model works in [-1, 1]

    def _decoder_registers(self, codes: Tensor, keep: Tensor) -> Tensor:
        """Quantized codes (b, K, code_dim) and keep lengths (b,) -> decoder register tokens (b, K, width), positions
        >= keep replaced by the mask token (so what is dropped cannot reach the decoder)."""
        k = self.config.num_tokens
        kept = torch.arange(k, device=codes.device)[None, :] < keep[:, None]  # (b, K)
        tokens = torch.where(kept[..., None], self.from_code(codes), self.mask_token.to(codes.dtype))
        return tokens + self.dec_reg_pos

    def predict_x0(self, x_t: Tensor, sigma: Tensor, registers: Tensor) -> Tensor:
        """Noisy patches (b, N, p*p*3) at noise level sigma (b,) in [0, 1] and decoder registers (b, K, width) ->
        clean-patch estimate x0_hat (b, N, p*p*3) in [-1, 1] scale.

        The network predicts the clean image, not the velocity or the noise (Li & He 2025, "Back to basics: let
        denoising generative models denoise"): a patch (p*p*3 values) can be wider than the transformer, and a
        noise or velocity prediction has to carry the full-dimensional noise through that bottleneck, which a small
        decoder cannot, leaving sampled images covered in residual noise. Clean patches lie near a low-dimensional
        manifold and pass through it.
        """
        c = self.config
        temb = self.time_embed(self.time_proj(sigma * 1000).to(x_t.dtype))  # same timestep scale as the scheduler
        patches = self.noisy_embed(x_t) + self.dec_pos
        if c.token_mixing:
            patches = patches + torch.einsum("pk,bkd->bpd", self.dec_mix, registers)
        h = torch.cat([registers, patches], dim=1)
        return self.to_pixels(self.decoder(h, c=temb)[:, c.num_tokens:])

    def velocity(self, x_t: Tensor, sigma: Tensor, registers: Tensor) -> Tensor:
        """The velocity (x_t - x0_hat) / sigma implied by `predict_x0`, for the scheduler's Euler steps (which never
        evaluate at sigma = 0; the last step lands exactly on x0_hat)."""
        x0 = self.predict_x0(x_t, sigma, registers)
        return (x_t - x0) / sigma.to(x_t.dtype).clamp_min(1e-4)[:, None, None]
