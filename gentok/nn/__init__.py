"""Shared layers: SDPA attention with masks and KV cache, transformer blocks (optionally adaLN), patch (un)embed."""

from gentok.nn.attention import Attention
from gentok.nn.patch import PatchEmbed, patchify, unpatchify
from gentok.nn.transformer import MLP, Block, Transformer, init_weights, sincos_positions

__all__ = ["Attention", "Block", "MLP", "Transformer", "PatchEmbed", "patchify", "unpatchify", "init_weights",
           "sincos_positions"]
