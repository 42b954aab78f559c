"""A ViT encoder that summarises an image into K latent tokens: the encoder half shared by TiTok and FlexTok.

Image patches (plus learned positions) and K learned latent tokens go through one transformer; only the K latent
outputs are kept and projected to the quantizer's code width. Optionally the latents start from a learned linear
mix of the patches (`mix`, (K, patches), initialised by the caller as a spatial pooling: TiTok's contiguous bands,
FlexTok's coarse-to-fine region tree), because attention starts out uniform and a small model otherwise learns
spatial routing slowly; and optionally latent i attends only to latents <= i (FlexTok's causal registers, so a
prefix of the tokens never depends on later ones).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gentok.nn.patch import PatchEmbed
from gentok.nn.transformer import Transformer

# Parameter names of the encoder half before it was shared (kept flat on the tokenizer) -> names inside it.
_LEGACY = {"patch_embed.": "patch_embed.", "enc_pos": "pos", "encoder.": "transformer.", "to_code.": "to_code.",
           "enc_mix": "mix"}


class LatentEncoder(nn.Module):
    """`forward(images (b, c, H, W)) -> codes (b, K, code_dim)`; images in the scale the model works in.

    Args:
        image_size, patch_size, channels: the square input and its non-overlapping patches.
        width, depth, heads, mlp_ratio: the transformer.
        num_tokens: K, the latent tokens kept.
        code_dim: width of the output codes (the quantizer's input).
        mix: optional (K, patches) initial patch -> latent mixing matrix (a learned parameter); None: no mixing.
        causal_latents: latent i attends to the patches and to latents <= i only.
        class_token: a learned token placed before the patches (its output is unused), as in the official TiTok
            weights, whose attention was trained with it present.
        norm_in: a LayerNorm on the token sequence before the transformer (official TiTok's `ln_pre`).
        legacy_latent_layout: read the latent outputs (b, K, width) as the memory of a (b, width, K) tensor before
            projecting them, as the official TiTok l32/b64/s128 weights do (a reshape where a transpose was meant;
            the weights only work with the same reading).

    The transformer keeps PyTorch's default init; the owning tokenizer applies `init_weights(encoder.transformer)`
    where it always did, so a seed gives the same initial weights as before the encoder was shared.
    """

    def __init__(self, image_size: int, patch_size: int, width: int, depth: int, heads: int, mlp_ratio: float,
                 num_tokens: int, code_dim: int, channels: int = 3, mix: Tensor | None = None,
                 causal_latents: bool = False, class_token: bool = False, norm_in: bool = False,
                 legacy_latent_layout: bool = False):
        super().__init__()
        num_patches = (image_size // patch_size) ** 2
        if mix is not None and tuple(mix.shape) != (num_tokens, num_patches):
            raise ValueError(f"mix must have shape ({num_tokens}, {num_patches}), got {tuple(mix.shape)}")
        self.num_tokens = num_tokens
        scale = width**-0.5
        # creation order (and so the random init for a seed) is the one the tokenizers always used
        self.patch_embed = PatchEmbed(patch_size, channels, width)
        self.pos = nn.Parameter(torch.randn(num_patches, width) * scale)
        self.latents = nn.Parameter(torch.randn(num_tokens, width) * scale)
        self.transformer = Transformer(width, depth, heads, mlp_ratio)
        self.to_code = nn.Linear(width, code_dim)
        self.mix = nn.Parameter(mix.clone().float()) if mix is not None else None
        self.register_buffer("mask", _latent_mask(num_patches, num_tokens) if causal_latents else None,
                             persistent=False)
        # options for official checkpoints, created last so the seeded init of the other parameters is unchanged
        if class_token and causal_latents:
            raise ValueError("class_token and causal_latents cannot be combined")
        self.cls = nn.Parameter(torch.randn(1, width) * scale) if class_token else None
        self.norm_in = nn.LayerNorm(width) if norm_in else nn.Identity()
        self.legacy_latent_layout = legacy_latent_layout

    def forward(self, images: Tensor) -> Tensor:
        patches = self.patch_embed(images) + self.pos  # (b, N, width)
        latents = self.latents.expand(images.shape[0], -1, -1)  # (b, K, width)
        if self.mix is not None:
            latents = latents + torch.einsum("kp,bpd->bkd", self.mix, patches)
        tokens = [patches, latents] if self.cls is None else [self.cls.expand(len(images), -1, -1), patches, latents]
        # only the latents are read: the last block computes them alone (patches still give keys and values)
        h = self.transformer(self.norm_in(torch.cat(tokens, dim=1)), mask=self.mask, keep_last=self.num_tokens)
        if self.legacy_latent_layout:
            h = h.reshape(h.shape[0], h.shape[2], h.shape[1]).transpose(1, 2)
        return self.to_code(h)  # (b, K, code_dim)


def _latent_mask(num_patches: int, num_tokens: int) -> Tensor:
    """(N + K, N + K) bool, True = may attend: every token sees the patches; latent i sees latents <= i."""
    n, k = num_patches, num_tokens
    mask = torch.zeros(n + k, n + k, dtype=torch.bool)
    mask[:, :n] = True
    mask[n:, n:] = torch.ones(k, k, dtype=torch.bool).tril()
    return mask


def check_latent_sizes(config) -> None:
    """The size checks of a config that builds a `LatentEncoder` (TiTok's, FlexTok's): `image_size`, `patch_size`,
    `width`, `heads`, `num_tokens`; a `ValueError` naming the first that does not fit."""
    if config.image_size % config.patch_size:
        raise ValueError(f"image_size {config.image_size} is not a multiple of patch_size {config.patch_size}")
    if config.width % config.heads:
        raise ValueError(f"width {config.width} is not divisible by heads {config.heads}")
    if config.num_tokens < 1:
        raise ValueError("num_tokens must be >= 1")


def legacy_encoder_hook(latents_name: str, attribute: str = "encoder"):
    """A `load_state_dict` pre-hook for a tokenizer whose `attribute` is a `LatentEncoder`: renames the flat
    parameter names its checkpoints had before the encoder was shared (`patch_embed.*`, `enc_pos`, `<latents_name>`,
    `encoder.*`, `to_code.*`, `enc_mix`) to `<attribute>.*`, so old model directories and training checkpoints load.
    A state dict already in the new layout passes through untouched."""
    legacy = {**_LEGACY, latents_name: "latents"}

    def hook(module, state_dict, prefix, *args):
        if prefix + attribute + ".latents" in state_dict or prefix + latents_name not in state_dict:
            return  # new layout, or not an encoder state dict at all
        for key in [k for k in state_dict if k.startswith(prefix)]:
            name = key[len(prefix):]
            for old, new in legacy.items():
                if name == old or (old.endswith(".") and name.startswith(old)):
                    state_dict[prefix + attribute + "." + new + name[len(old):]] = state_dict.pop(key)
                    break

    return hook
