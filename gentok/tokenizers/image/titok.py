"""TiTok: "An Image is Worth 32 Tokens for Reconstruction and Generation" (Yu et al. 2024).

A ViT encoder reads image patches together with K learnable latent tokens (`gentok.nn.LatentEncoder`, shared with
FlexTok); only the latents are kept, quantized into a 1D sequence of K ids. A ViT decoder reads K quantized latents
plus one mask token per patch and predicts the pixels of every patch. Trained single-stage here (pixel
reconstruction + quantizer loss); a small convolutional refiner after un-patchifying removes patch-boundary artefacts
cheaply. With `colour_tokens` = g*g, the last g*g of the K ids are not learned: they pack a g x g thumbnail of the
image (3 bits per channel for 512 codes, `colour_path.py`), and the decoder paints detail on top of that thumbnail,
so colours the training photographs never showed still come back.

The same class runs the official TiTok checkpoints (bytedance/1d-tokenizer, converted by
`gentok.pretrained.titok`) through a few options that default to off: a class token and an input LayerNorm
in both transformers, separate decoder width/heads, their legacy latent layout, [0, 1] pixels in and out, and either
a plain 3x3 output conv (vq8k models) or a head that predicts MaskGIT-VQGAN proxy codes decoded by that VQGAN's conv
decoder (l32/b64/s128, see `maskgit_vqgan.py`).

With `quantizer=None` and `vae_dim=C` the bottleneck is a VAE's instead (the official TiTok VAE models): the encoder
gives 2C channels per token, the means and log-variances of a diagonal Gaussian posterior, and the tokens are
continuous, C floats each. `encode` then returns `Latents` (the posterior mean, or a draw with `sample=True`),
`decode` takes them, and `vocab_size` is None. Training adds the KL term to N(0, I) (`kl_weight`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gentok.checkpoint import register
from gentok.config import config
from gentok.nn import LatentEncoder, Transformer, check_latent_sizes, init_weights, legacy_encoder_hook, unpatchify
from gentok.pretrained.maskgit_vqgan import MaskGitVQGANConfig, ProxyCodeHead
from gentok.quantizers import FSQConfig, QuantizerConfig, VQConfig, build_quantizer
from gentok.tokenizers.base import Tokenizer, TokenizerOutput
from gentok.tokenizers.image import colour_path
from gentok.tokenizers.image.assets import ImageAssetsMixin, to_image_batch
from gentok.tokenizers.tokens import Latents, Tokens


@config
class TiTokConfig:
    image_size: int = 256
    patch_size: int = 16
    num_tokens: int = 32  # K: the 1D token budget per image
    width: int = 1024
    enc_depth: int = 24
    dec_depth: int = 24
    heads: int = 16
    mlp_ratio: float = 4.0
    quantizer: QuantizerConfig | None = VQConfig(dim=12, codebook_size=4096)  # paper: 4096 x 12-d, l2-normalised
    # None with vae_dim > 0: a VAE bottleneck, continuous tokens (the official TiTok VAE models; see the docstring)
    vae_dim: int = 0  # C: floats per continuous token (official VAE models: 16)
    kl_weight: float = 1e-6  # VAE training: weight of KL(posterior || N(0, I)), summed per image (official value)
    refine_channels: int = 0  # >0 adds a residual 3x3-conv refiner on the decoded pixels
    token_mixing: bool = False  # learned linear patch<->latent mixing, initialised as spatial pooling (see below)
    recon_loss: str = "mse"  # "mse", "l1" or "mse+l1"
    # a second pixel head: one colour per patch, bilinearly upsampled and added to the patch-wise pixels, so the
    # coarse picture is smooth across patch borders (see `_decode_latents`)
    coarse_head: bool = False
    # g*g colour tokens of the K (`num_tokens`): a g x g thumbnail, 3 x q bits per cell packed into one id, appended
    # to the K - g*g learned ids; the decoder adds its detail to the upsampled thumbnail (see `colour_path.py`)
    colour_tokens: int = 0
    # with colour tokens the decoder also reads the thumbnail's cells as inputs (validation, tiny, 600 steps, worst
    # hue rotation: 18.02 dB with, 17.26 without)
    colour_condition: bool = True
    # -- options for the official checkpoints (all off for gentok-trained models) --
    dec_width: int | None = None  # decoder width; None: `width` (official bl/sl models: a larger decoder)
    dec_heads: int | None = None  # decoder heads; None: `heads`
    class_token: bool = False  # a learned class token in both transformers (official weights need it)
    norm_in: bool = False  # LayerNorm before both transformers (official `ln_pre`)
    legacy_latent_layout: bool = False  # official l32/b64/s128 read latents (b, K, w) as (b, w, K); see LatentEncoder
    pixel_range: str = "signed"  # "signed": the model works in [-1, 1]; "unit": in [0, 1] (official)
    out_conv: bool = False  # a plain 3x3 conv on the decoded pixels instead of the refiner (official vq8k)
    proxy_decoder: MaskGitVQGANConfig | None = None  # predict MaskGIT-VQGAN proxy codes, not pixels (official VQ)

    def __post_init__(self):
        check_latent_sizes(self)
        if (self.quantizer is None) != (self.vae_dim > 0):
            raise ValueError(f"set one bottleneck: a quantizer, or quantizer=None with vae_dim > 0 for continuous "
                             f"tokens; got quantizer={type(self.quantizer).__name__}, vae_dim={self.vae_dim}")
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight}")
        if self.recon_loss not in ("mse", "l1", "mse+l1"):
            raise ValueError(f"recon_loss must be 'mse', 'l1' or 'mse+l1', got {self.recon_loss!r}")
        if self.decoder_width % self.decoder_heads:
            raise ValueError(f"dec_width {self.decoder_width} is not divisible by dec_heads {self.decoder_heads}")
        if self.pixel_range not in ("signed", "unit"):
            raise ValueError(f"pixel_range must be 'signed' or 'unit', got {self.pixel_range!r}")
        if sum((self.refine_channels > 0, self.out_conv, self.proxy_decoder is not None)) > 1:
            raise ValueError("refine_channels, out_conv and proxy_decoder are alternative output heads: pick one")
        if self.proxy_decoder is not None and self.proxy_decoder.upsample != self.patch_size:
            raise ValueError(f"the proxy decoder upsamples {self.proxy_decoder.upsample}x but patches are "
                             f"{self.patch_size} px")
        if self.coarse_head and (self.proxy_decoder is not None or self.out_conv):
            raise ValueError("coarse_head adds to the patch-wise pixel head; it does not combine with proxy_decoder "
                             "or out_conv")
        if self.token_mixing and self.class_token:
            raise ValueError("token_mixing and class_token cannot be combined")
        if self.colour_tokens:
            colour_path.check_colour_tokens(self)

    @property
    def learned_tokens(self) -> int:
        """Tokens the encoder learns: K less the colour tokens."""
        return self.num_tokens - self.colour_tokens

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def token_dim(self) -> int:
        """Width of one token's vector as the decoder reads it: the quantizer's dim, or vae_dim."""
        return self.quantizer.dim if self.quantizer is not None else self.vae_dim

    @property
    def decoder_width(self) -> int:
        return self.dec_width or self.width

    @property
    def decoder_heads(self) -> int:
        return self.dec_heads or self.heads


def _preset(image_size, patch, tokens, width, depth, heads, quantizer=None, refine=0):
    return TiTokConfig(image_size=image_size, patch_size=patch, num_tokens=tokens, width=width, enc_depth=depth,
                       dec_depth=depth, heads=heads, quantizer=quantizer or VQConfig(dim=12, codebook_size=4096),
                       refine_channels=refine)


PRESETS = {
    # CPU demo: 64x64 crops, 32 tokens x 9 bits = 288 bits per image. Euclidean VQ and token mixing: both learn
    # markedly faster than cosine codes / pure attention routing in CPU-sized runs (held-out PSNR after 50 steps:
    # 18.0 dB vs 17.0 dB cosine vs 14.1 dB without mixing; after 300 steps 20.45 dB Euclidean vs 20.01 dB cosine).
    # 512 codes, not 1024: a 10-minute CPU run fills 87% of 512 codes on held-out crops but only 70% of 1024 (the
    # held-out perplexity stays at ~200-270 either way), for 0.3 dB less PSNR at 300 steps. No coarse head: on the
    # recipe's validation photographs it was a tie (see recipes/titok.py). Of the 32 tokens, 16 are colour tokens
    # (a 4 x 4 thumbnail at 3 bits per channel) and 16 learned: with the recipe's hue rotations the only split that
    # beat the equal-bit baseline at every hue of the validation views (600 steps, worst rotation: 16 colour tokens
    # +0.20 dB, 9 -0.01, 25 -0.04, 4 -0.35; without colour tokens -2.89 fully trained; see recipes/titok.py)
    "tiny": TiTokConfig(image_size=64, patch_size=16, num_tokens=32, width=128, enc_depth=4, dec_depth=4, heads=4,
                        quantizer=VQConfig(dim=8, codebook_size=512, cosine=False, decay=0.9),
                        refine_channels=32, token_mixing=True, colour_tokens=16),
    "tiny-fsq": TiTokConfig(image_size=64, patch_size=16, num_tokens=32, width=128, enc_depth=4, dec_depth=4,
                            heads=4, quantizer=FSQConfig(dim=5, levels=(4, 4, 4, 4, 4)), refine_channels=32,
                            token_mixing=True),
    # bigger CPU preset (see README): about the same bit budget (320 bits), more capacity and finer patches, spent as
    # 64 tokens x 32 codes (one token per 8-px patch at the token mixing's pooling init) rather than 32 x 1024: on the
    # validation photographs 19.43 dB against 19.11 after 800 steps; 80 x 16 codes 18.28 against 19.10 after 400.
    # MLP ratio 2: the CPU step is matrix-product bound and 1.41x cheaper with it, so the hour trains 3000 steps
    # instead of 2200, which beat the ratio-4 model on validation at equal wall time (20.19 against 20.04 dB)
    "small": TiTokConfig(image_size=64, patch_size=8, num_tokens=64, width=192, enc_depth=6, dec_depth=6, heads=6,
                         mlp_ratio=2, quantizer=VQConfig(dim=8, codebook_size=32, cosine=False, decay=0.9),
                         refine_channels=48, token_mixing=True),
    # the paper's models at 256 px (GPU)
    "S-128": _preset(256, 16, 128, 512, 8, 8),
    "B-64": _preset(256, 16, 64, 768, 12, 12),
    "L-32": _preset(256, 16, 32, 1024, 24, 16),
}


def preset(name: str) -> TiTokConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown TiTok preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]


class Refiner(nn.Module):
    """x + conv(gelu(conv(x))): a cheap local correction of the patch-wise pixel prediction."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(channels, channels, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(channels, 3, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


@register("titok")
class TiTok(ImageAssetsMixin, Tokenizer):
    config_class = TiTokConfig

    def __init__(self, config: TiTokConfig):
        super().__init__()
        self.config = c = config
        scale = c.width**-0.5
        # Attention starts out uniform, so a fresh TiTok first reconstructs every patch from the same average of the
        # latents and learns spatial routing slowly. With token mixing, a learned (K x patches) matrix, initialised
        # so each latent pools a contiguous band of patches (and the decoder's transpose spreads it back), gives the
        # encoder and decoder a spatial starting point; training is free to turn it into any 1D assignment.
        pool = _band_matrix(c.learned_tokens, c.num_patches) if c.token_mixing else None
        # encoder: patches + K latent tokens
        self.encoder = LatentEncoder(c.image_size, c.patch_size, c.width, c.enc_depth, c.heads, c.mlp_ratio,
                                     c.learned_tokens, c.token_dim if c.quantizer is not None else 2 * c.vae_dim,
                                     mix=pool / pool.sum(1, keepdim=True) if pool is not None else None,
                                     class_token=c.class_token, norm_in=c.norm_in,
                                     legacy_latent_layout=c.legacy_latent_layout)
        self.quantizer = build_quantizer(c.quantizer) if c.quantizer is not None else None  # None: a VAE
        # decoder: K quantized latents + one mask token per patch
        w = c.decoder_width
        scale = w**-0.5
        self.from_code = nn.Linear(c.token_dim, w)
        self.dec_latent_pos = nn.Parameter(torch.randn(c.learned_tokens, w) * scale)
        self.mask_token = nn.Parameter(torch.randn(w) * scale)
        self.dec_pos = nn.Parameter(torch.randn(c.num_patches, w) * scale)
        self.decoder = Transformer(w, c.dec_depth, c.decoder_heads, c.mlp_ratio)
        if c.proxy_decoder is not None:
            self.to_pixels = ProxyCodeHead(w, c.proxy_decoder)
        else:
            self.to_pixels = nn.Linear(w, c.patch_size * c.patch_size * 3)
        if c.refine_channels:
            self.refiner = Refiner(c.refine_channels)
        else:
            self.refiner = nn.Conv2d(3, 3, 3, padding=1) if c.out_conv else nn.Identity()
        if c.token_mixing:
            self.dec_mix = nn.Parameter(pool.T / pool.T.sum(1, keepdim=True))
        # official-checkpoint options, created last so a seed gives gentok models the same init as before
        self.dec_cls = nn.Parameter(torch.randn(w) * scale) if c.class_token else None
        self.dec_norm_in = nn.LayerNorm(w) if c.norm_in else nn.Identity()
        self.to_coarse = nn.Linear(w, 3) if c.coarse_head else None
        # colour tokens: q bits per channel per cell; the decoder reads each cell's colour at its own position
        self.colour_q = colour_path.cell_bits(self.quantizer) if c.colour_tokens else 0
        if c.colour_tokens and c.colour_condition:
            self.from_colour = nn.Linear(3, w)
            self.colour_pos = nn.Parameter(torch.randn(c.colour_tokens, w) * scale)
        else:
            self.from_colour = self.colour_pos = None
        init_weights(self.encoder.transformer)
        init_weights(self.decoder)
        # checkpoints saved before the encoder was shared keep loading
        self.register_load_state_dict_pre_hook(legacy_encoder_hook("latents"))

    # -- contract -------------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int | None:
        """Codes of the quantizer; None for a VAE TiTok (continuous tokens, no ids)."""
        return self.quantizer.codebook_size if self.quantizer is not None else None

    @property
    def tokens_per_item(self) -> int:
        return self.config.num_tokens

    def forward(self, images: Tensor) -> TokenizerOutput:
        """Training pass on images (b, 3, S, S) in [0, 1]."""
        x = to_image_batch(images, self.config.image_size)
        z = self._encode_latents(x)
        thumb = self._thumbnail(x)
        if self.quantizer is not None:
            q = self.quantizer(z)
            codes, ids, extra_loss = q.quantized, self._with_colour(q.indices, thumb), q.loss
            extra = {"quantizer_loss": q.loss.detach(), **{f"code_{k}": v for k, v in q.metrics.items()}}
        else:  # VAE: a reparameterised draw from the posterior, and its KL to N(0, I) summed per image
            mean, logvar = _posterior(z)
            codes = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum((1, 2)).mean()
            ids, extra_loss, extra = codes.detach(), self.config.kl_weight * kl, {"kl": kl.detach()}
        recon = self._decode_latents(codes, thumb)
        target = x * 2 - 1
        pred = recon * 2 - 1
        mse = F.mse_loss(pred, target)
        l1 = F.l1_loss(pred, target)
        rec = {"mse": mse, "l1": l1, "mse+l1": mse + l1}[self.config.recon_loss]
        loss = rec + extra_loss
        with torch.no_grad():
            psnr = 10 * torch.log10(1.0 / F.mse_loss(recon.clamp(0, 1), x).clamp_min(1e-10))
        metrics = {"recon_loss": rec.detach(), "psnr": psnr, **extra}
        return TokenizerOutput(recon.clamp(0, 1) if not self.training else recon, ids, loss, metrics)

    @torch.no_grad()
    def encode(self, images, sample: bool = False, generator: torch.Generator | None = None) -> Tokens | Latents:
        """Images (tensor (b, 3, S, S) in [0, 1], PIL images or paths) -> `Tokens` with ids (b, K).

        A VAE TiTok (`vae_dim` C) returns `Latents` (b, K, C) instead: the posterior mean (its mode), or with
        `sample=True` a draw mean + std * noise. The noise is drawn as (b, C, K) on `generator`'s device (the CPU
        without one), the official code's order, so a CPU seed gives the official sample. Both options are for VAEs.
        """
        x = to_image_batch(images, self.config.image_size)
        z = self._encode_latents(x)
        if self.quantizer is not None:
            if sample or generator is not None:
                raise ValueError("sample and generator are options of a VAE TiTok; this one has discrete tokens")
            return self.make_tokens(self._with_colour(self.quantizer.encode(z), self._thumbnail(x)))
        mean, logvar = _posterior(z)
        if not sample:
            return Latents(mean, {"posterior": "mode"})
        b, k, d = mean.shape
        device = generator.device if generator is not None else "cpu"
        noise = torch.randn(b, d, k, generator=generator, device=device).transpose(1, 2).to(mean.device)
        return Latents(mean + torch.exp(0.5 * logvar) * noise, {"posterior": "sample"})

    @torch.no_grad()
    def decode(self, tokens) -> Tensor:
        """`Tokens` or ids (b, K), every item all K tokens -> images (b, 3, S, S) in [0, 1]. A VAE TiTok takes
        `Latents` or a float tensor (b, K, vae_dim). With colour tokens the last g*g ids are the thumbnail's cells
        (`colour_path.unpack`; an id past the packed range, which a generator may sample, saturates its levels)."""
        c = self.config
        thumb = None
        if self.quantizer is None:
            codes = self.as_latents(tokens, c.num_tokens, c.vae_dim).values.to(self.from_code.weight.dtype)
        else:
            ids = self.as_tokens(tokens, length=c.num_tokens).ids
            codes = self.quantizer.decode(ids[:, :c.learned_tokens])
            if c.colour_tokens:
                thumb = colour_path.unpack(ids[:, c.learned_tokens:], self.colour_q).to(codes.dtype)
        return self._decode_latents(codes, thumb).clamp(0, 1)

    def compile(self, *args, freeze: bool = False, **kwargs) -> None:
        """`torch.compile` the two transformers (`encoder`, `decoder`) in place; `encode`, `decode` and `forward` then
        run them compiled. Arguments go to `torch.compile`. (`nn.Module.compile` would compile only `forward`, which
        `encode`/`decode` do not call.)

        The pixel heads stay eager (compiled convolutions pick kernels that round differently). Compiled codes stay
        within ~1e-6 of eager (same ids in our checks); decoded pixels within ~3e-5 for the official S-128 at its
        published size, whose MaskGIT-VQGAN head amplifies the decoder's rounding. The first call at each input shape
        compiles (tens of seconds on a CPU; `benchmarks/titok.py --compile` reports it apart from the speed).

        Args:
            freeze: for inference only: also let Inductor fold the weights into the compiled code (on a CPU it prepacks
                them for oneDNN matmuls). Grad-free calls then ignore later changes to the weights, so compile again
                after training steps or loading other weights.
        """
        if freeze:
            kwargs["options"] = {**kwargs.get("options", {}), "freezing": True}
        for module in (self.encoder, self.decoder):
            module.compile(*args, **kwargs)

    # -- internals ------------------------------------------------------------------------------------------------
    def _encode_latents(self, x: Tensor) -> Tensor:
        signed = self.config.pixel_range == "signed"
        return self.encoder(x * 2 - 1 if signed else x)  # (b, K, code_dim)

    def _thumbnail(self, x: Tensor) -> Tensor | None:
        """Images (b, 3, S, S) in [0, 1] -> the quantized colour thumbnail (b, 3, g, g), or None without colour
        tokens."""
        c = self.config
        if not c.colour_tokens:
            return None
        return colour_path.thumbnail(x, colour_path.grid_side(c.colour_tokens), self.colour_q).to(x.dtype)

    def _with_colour(self, ids: Tensor, thumb: Tensor | None) -> Tensor:
        """Learned ids (b, K - g*g) -> all K ids: the thumbnail's packed cells appended (unchanged without)."""
        return ids if thumb is None else torch.cat([ids, colour_path.pack(thumb, self.colour_q)], dim=1)

    def _decode_latents(self, z: Tensor, thumb: Tensor | None = None) -> Tensor:
        """Codes (b, K', code_dim) of the K' learned tokens, and the colour thumbnail (b, 3, g, g) with colour tokens
        -> images (b, 3, S, S) in [0, 1], unclamped."""
        c = self.config
        b = z.shape[0]
        latents = self.from_code(z) + self.dec_latent_pos
        masks = (self.mask_token + self.dec_pos).expand(b, -1, -1)
        if c.token_mixing:
            masks = masks + torch.einsum("pk,bkd->bpd", self.dec_mix, latents)
        if self.from_colour is not None:  # the cells' colours (signed) as extra decoder inputs, one per cell
            cells = self.from_colour((thumb * 2 - 1).flatten(2).transpose(1, 2)) + self.colour_pos  # (b, g*g, w)
            latents = torch.cat([latents, cells], dim=1)
        tokens = [latents, masks] if self.dec_cls is None else [latents, self.dec_cls.expand(b, 1, -1), masks]
        h = self.decoder(self.dec_norm_in(torch.cat(tokens, dim=1)))[:, -c.num_patches:]
        if c.proxy_decoder is not None:
            pixels = self.to_pixels(h)
        else:
            pixels = unpatchify(self.to_pixels(h), c.patch_size, c.image_size, c.image_size)
        if self.to_coarse is not None:
            # one colour per patch on the patch grid, upsampled bilinearly (what the equal-bit baseline does with its
            # low-resolution image): continuous across patch borders, where the patch-wise head alone leaves steps
            g = c.image_size // c.patch_size
            coarse = unpatchify(self.to_coarse(h), 1, g, g)
            pixels = pixels + F.interpolate(coarse, size=(c.image_size, c.image_size), mode="bilinear",
                                            align_corners=False)
        if thumb is not None:
            # the decoder adds detail to the colour-blind thumbnail, upsampled as the equal-bit baseline does, so
            # the colour of every region comes from the thumbnail, whatever hues training showed
            pixels = pixels + colour_path.upsample(thumb, c.image_size) * 2 - 1
        pixels = self.refiner(pixels)
        return (pixels + 1) / 2 if c.pixel_range == "signed" else pixels


def _posterior(params: Tensor) -> tuple[Tensor, Tensor]:
    """Encoder outputs (b, K, 2C) -> the diagonal Gaussian posterior's mean and log-variance (b, K, C), in float32.

    The first C channels are the means, the last C the log-variances, clamped to [-30, 20] (as the official VAE does,
    so exp never overflows)."""
    mean, logvar = params.float().chunk(2, dim=-1)
    return mean, logvar.clamp(-30.0, 20.0)


def _band_matrix(tokens: int, patches: int) -> Tensor:
    """(tokens, patches) 0/1 matrix: token k covers the k-th contiguous band of patches in raster order."""
    m = torch.zeros(tokens, patches)
    for k in range(tokens):
        lo = (k * patches) // tokens
        hi = max(((k + 1) * patches) // tokens, lo + 1)
        m[k, lo:hi] = 1.0
    return m

