"""FlexTok's official checkpoints (apple/ml-flextok) as a gentok tokenizer: `OfficialFlexTok`.

It composes the official network (`gentok.pretrained.flextok_net`), gentok's FSQ (`gentok.quantizers.FSQ`: the same
bounds, rounding and id layout as theirs) and gentok's flow sampling (`gentok.sampling.flow`: Euler steps on the grid
t = i / T, classifier-free guidance or APG). Like gentok's own FlexTok, every prefix of the K ids decodes. It
encodes and decodes; fine-tuning is for gentok's own `FlexTok`. `gentok.load(snapshot)` builds it through the
converter `gentok.pretrained.flextok`; `save_pretrained` writes an ordinary gentok directory of type
"flextok.official". Directories saved before this class existed (type "flextok" with an `official` config) load as
this class too (`FlexTok.upgrade_config`).

Weights of the published checkpoints carry the Apple Machine Learning Research Model licence (research use only);
gentok ships none of them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gentok.checkpoint import register
from gentok.pretrained.flextok_net import OfficialFlexTokConfig, OfficialFlexTokNet
from gentok.quantizers import FSQConfig, build_quantizer
from gentok.sampling.flow import apg_guided, euler_sample, guided
from gentok.tokenizers.base import Tokenizer, TokenizerOutput
from gentok.tokenizers.image.assets import ImageAssetsMixin, to_image_batch
from gentok.tokenizers.tokens import Tokens


@register("flextok.official")
class OfficialFlexTok(ImageAssetsMixin, Tokenizer):
    """Images (b, 3, S, S) in [0, 1] <-> `Tokens` of K FSQ ids (b, K); any prefix of 1..K ids decodes."""

    config_class = OfficialFlexTokConfig
    decodes_prefixes = True  # every prefix ids[:, :k], 1 <= k <= K, decodes: evaluation reports quality per k
    earlier_types = ("flextok",)  # converted dirs saved before this class existed: their token files say "flextok"

    def __init__(self, config: OfficialFlexTokConfig):
        super().__init__()
        self.config = c = config
        self.net = OfficialFlexTokNet(c)
        # FSQ has no weights: the state dict is the network's alone (`net.*`), as in directories of older gentok
        self.quantizer = build_quantizer(FSQConfig(dim=len(c.levels), levels=c.levels))

    # -- contract -------------------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def tokens_per_item(self) -> int:
        """K, the full length; `decode` also takes any prefix of 1..K tokens per item."""
        return self.config.registers

    @property
    def default_decode_options(self) -> dict:
        """The sampling options `decode` uses when not given."""
        return {"steps": self.config.sample_steps, "guidance": self.config.guidance}

    def forward(self, images: Tensor) -> TokenizerOutput:
        raise NotImplementedError("training the official FlexTok network is not supported; it encodes and decodes "
                                  "(fine-tune gentok's own FlexTok instead)")

    @torch.no_grad()
    def encode(self, images) -> Tokens:
        """Images (tensor (b, 3, S, S) in [0, 1], PIL images or paths) -> `Tokens` with ids (b, K); every prefix
        decodes."""
        x = to_image_batch(images, self.config.image_size)
        latents = self.net.vae_encode(x * 2 - 1)  # the network works in [-1, 1]
        return self.make_tokens(self.quantizer.encode(self.net.encode_latents(latents)))

    @torch.no_grad()
    def decode(self, tokens, steps: int | None = None, guidance: float | None = None, seed: int = 0,
               generator: torch.Generator | None = None, norm_guidance: bool = False) -> Tensor:
        """Token prefixes -> images (b, 3, S, S) in [0, 1], by Euler steps t = i / steps from noise.

        Args:
            tokens: `Tokens` whose items keep their first 1..K ids (`lengths`, `PAD_ID` past them), or bare ids
                (b, k) with 1 <= k <= K (padding marks shorter items).
            steps: Euler steps (default `config.sample_steps`).
            guidance: classifier-free guidance scale (default `config.guidance`; 1 = off).
            seed: seeds one starting noise shared by every item, so an item decodes to the same image alone or in
                any batch; ignored when `generator` is given, which draws one noise per item in order, as the
                official pipeline does with the same generator.
            norm_guidance: guide with APG (Sadat et al. 2024) instead of plain CFG (the official recommendation is
                guidance 7.5 with APG).
        """
        c = self.config
        t = self.as_prefix_tokens(tokens, c.registers)
        steps = c.sample_steps if steps is None else int(steps)
        guidance = c.guidance if guidance is None else float(guidance)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        b, device = t.ids.shape[0], t.ids.device
        shape = (c.latent_channels, c.latent_grid, c.latent_grid)
        if generator is None:
            noise = torch.randn(1, *shape, generator=torch.Generator(device=device).manual_seed(seed), device=device)
            noise = noise.expand(b, *shape)
        else:
            noise = torch.cat([torch.randn(1, *shape, generator=generator, device=device) for _ in range(b)])
        registers = self.registers_for(t.ids, t.lengths)
        null = self.net.null_registers(registers)
        cond = lambda x, s: self.net.velocity(x, s, registers)  # noqa: E731
        uncond = lambda x, s: self.net.velocity(x, s, null)  # noqa: E731
        velocity = (apg_guided if norm_guidance else guided)(cond, uncond, guidance)
        latents = euler_sample(velocity, noise, steps)
        return ((self.net.vae_decode(latents) + 1) / 2).clamp(0, 1)

    def registers_for(self, ids: Tensor, keep: Tensor) -> Tensor:
        """Ids (b, n <= K) (any value past `keep`) and keep lengths (b,) -> the decoder's registers (b, K, d)."""
        return self.net.registers_for(self.quantizer.decode(ids.clamp_min(0)), keep)
