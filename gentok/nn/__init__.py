"""Shared layers: SDPA attention with masks and KV cache, transformer blocks (optionally adaLN), patch (un)embed,
and the ViT encoder to K latent tokens shared by the 1D image tokenizers."""

from gentok.nn.attention import Attention
from gentok.nn.latent_encoder import LatentEncoder, check_latent_sizes, legacy_encoder_hook
from gentok.nn.patch import PatchEmbed, patchify, unpatchify
from gentok.nn.transformer import MLP, Block, Transformer, init_weights, sincos_positions

__all__ = ["Attention", "Block", "MLP", "Transformer", "PatchEmbed", "patchify", "unpatchify", "init_weights",
           "sincos_positions", "LatentEncoder", "check_latent_sizes", "legacy_encoder_hook"]
