"""transformers EnCodec / DAC / Mimi behind the audio contract, built offline from small configs with random weights."""

from __future__ import annotations

import math

import pytest
import torch

import gentok
from gentok.tokenizers.audio.hf import DacCodec, EncodecCodec, HFCodecConfig, MimiCodec

SR = 16000


def _configs():
    from transformers import DacConfig, EncodecConfig, MimiConfig

    return {
        "encodec": (EncodecCodec, EncodecConfig(sampling_rate=SR, num_filters=8, upsampling_ratios=[4, 4, 4],
                                                hidden_size=16, codebook_size=64, target_bandwidths=[1.5, 3.0],
                                                num_lstm_layers=1)),
        "dac": (DacCodec, DacConfig(encoder_hidden_size=8, downsampling_ratios=[2, 4, 4], decoder_hidden_size=32,
                                    n_codebooks=3, codebook_size=64, codebook_dim=4, hidden_size=32, sampling_rate=SR)),
        "mimi": (MimiCodec, MimiConfig(hidden_size=32, num_filters=8, upsampling_ratios=[4, 4, 4], codebook_size=64,
                                       codebook_dim=16, num_quantizers=4, vector_quantization_hidden_dimension=16,
                                       num_hidden_layers=1, intermediate_size=32, num_attention_heads=2,
                                       num_key_value_heads=2, head_dim=16, sliding_window=16, upsample_groups=32,
                                       frame_rate=12.5, sampling_rate=SR)),
    }


def _direct_codes(name, model, x, k):
    """The wrapped transformers model's own encode call, for exactness."""
    hf = model.model
    if name == "encodec":
        return hf.encode(x[:, None], bandwidth=hf.config.target_bandwidths[k - 1]).audio_codes[0]
    if name == "dac":
        return hf.encode(x[:, None], n_quantizers=k).audio_codes[:, :k]
    return hf.encode(x[:, None], num_quantizers=k).audio_codes


@pytest.mark.parametrize("name", ["encodec", "dac", "mimi"])
def test_adapter_round_trip(name, tmp_path):
    cls, hf_cfg = _configs()[name]
    torch.manual_seed(0)
    m = cls.from_hf_config(hf_cfg)
    x = torch.randn(2, 5 * m.hop) * 0.1
    codes = m.encode(x, SR)
    assert codes.shape == (2, m.num_quantizers, 5) and codes.min() >= 0 and codes.max() < m.vocab_size
    assert m.bitrate(1) == math.log2(64) * m.frame_rate
    # exactly the codes transformers computes itself, and its reconstruction
    assert torch.equal(m.encode(x, SR, n_quantizers=2), _direct_codes(name, m, x, 2))
    assert torch.equal(m.encode(x, SR, n_quantizers=2), codes[:, :2])
    recon = m.decode(codes)
    assert recon.shape == (2, 5 * m.hop) and torch.isfinite(recon).all()
    # padded batch == one by one; resampled input; save/load through gentok; load from a transformers directory
    items = [x[0, : 3 * m.hop - 7], x[1]]
    batch = m.encode(items, SR)
    alone = m.encode(items[0], SR)
    assert torch.equal(batch[0, :, :3], alone[0]) and (batch[0, :, 3:] == -1).all()
    assert torch.equal(batch[1], codes[1])
    torch.testing.assert_close(m.decode(batch)[1], recon[1], atol=1e-5, rtol=1e-4)
    assert m.encode(x[:, : 2 * m.hop], 8000).shape[-1] == 4  # resampled to 16 kHz first: twice the frames
    m.save_pretrained(tmp_path / "g")
    loaded = gentok.load(tmp_path / "g")
    assert type(loaded) is cls and torch.equal(loaded.encode(x, SR), codes)
    m.model.save_pretrained(tmp_path / "hf")
    assert torch.equal(cls.from_local(tmp_path / "hf").encode(x, SR), codes)


def test_adapter_errors(tmp_path):
    cls, hf_cfg = _configs()["dac"]
    m = cls.from_hf_config(hf_cfg)
    with pytest.raises(ValueError, match="sample_rate"):
        m.encode(torch.zeros(1, 320), 16000.0)
    with pytest.raises(ValueError, match="channels"):
        m.encode(torch.zeros(1, 2, 320), SR)
    with pytest.raises(ValueError, match="n_quantizers"):
        m.encode(torch.zeros(1, 320), SR, n_quantizers=4)
    with pytest.raises(ValueError, match="wraps 'encodec'"):
        EncodecCodec(HFCodecConfig(hf_config=m.config.hf_config))
    with pytest.raises(ValueError, match="not a transformers checkpoint"):
        cls.from_local(tmp_path)
    with pytest.raises(TypeError, match="inference adapter"):
        m(torch.zeros(1, 320))
