"""Audio tokenizers: a trainable SEANet + residual-VQ codec (`codec.py`) and adapters over transformers' EnCodec,
DAC and Mimi (`hf.py`), behind one contract: `encode(wav, sample_rate, n_quantizers) -> codes (b, q, frames)`,
`decode(codes) -> wav (b, samples)`."""

from gentok.tokenizers.audio.codec import PRESETS, AudioCodec, CodecConfig, preset

__all__ = ["PRESETS", "AudioCodec", "CodecConfig", "preset"]
