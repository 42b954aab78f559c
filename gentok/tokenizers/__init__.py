"""Tokenizers: image/ (TiTok, FlexTok, binary latents), audio/ (codec, HF adapters), dna/ (MergeDNA)."""

from gentok.tokenizers.base import Tokenizer, TokenizerOutput

__all__ = ["Tokenizer", "TokenizerOutput"]
