"""Audio tokenizers: a trainable SEANet + residual-VQ codec (`codec.py`) and, in `gentok.pretrained.audio_codecs`,
adapters over transformers' EnCodec, DAC and Mimi, behind one contract (`base.py`):
`encode(wav, sample_rate=None, n_quantizers=None) -> Tokens` with ids `(b, frames, q)`,
`decode(tokens) -> wav (b, frames * hop)`."""

from gentok.tokenizers.audio.codec import PRESETS, AudioCodec, CodecConfig, preset

__all__ = ["PRESETS", "AudioCodec", "CodecConfig", "preset"]
