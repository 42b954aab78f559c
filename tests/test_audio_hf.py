"""transformers EnCodec / DAC / Mimi behind the audio contract, built offline from small configs with random weights;
their transformers checkpoint directories load through `gentok.load` (the converter route of every pretrained model)."""

from __future__ import annotations

import math

import pytest
import torch
from checkout_entry_points import declared, use_checkout_entry_points

import gentok
from gentok.checkpoint import CheckpointError
from gentok.pretrained.audio_codecs import DacCodec, EncodecCodec, HFCodecConfig, MimiCodec
from gentok.validate import PAD_ID

SR = 16000


@pytest.fixture(autouse=True)
def checkout_entry_points(monkeypatch):
    """This checkout's converters and types (see tests/checkout_entry_points.py); the audio converter is one."""
    assert declared("gentok.converters").get("audio-codecs") == "gentok.pretrained.audio_codecs"
    use_checkout_entry_points(monkeypatch)


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
    assert m.num_codebooks == m.num_quantizers and m.bits_per_token == m.num_quantizers * math.log2(64)
    x = torch.randn(2, 5 * m.hop) * 0.1
    tokens = m.encode(x)  # the model's own rate by default
    ids = tokens.ids
    assert torch.equal(m.encode(x, SR).ids, ids)
    assert ids.shape == (2, 5, m.num_quantizers) and ids.min() >= 0 and ids.max() < m.vocab_size
    assert tokens.lengths.tolist() == [5, 5]
    assert tokens.meta["sample_rate"] == SR and tokens.meta["frame_rate"] == m.frame_rate
    assert m.bitrate(1) == math.log2(64) * m.frame_rate
    # exactly the codes transformers computes itself (its (b, q, frames) transposed), and its reconstruction
    two = m.encode(x, n_quantizers=2).ids
    assert torch.equal(two, _direct_codes(name, m, x, 2).transpose(1, 2))
    assert torch.equal(two, ids[..., :2])
    recon = m.decode(tokens)
    assert recon.shape == (2, 5 * m.hop) and torch.isfinite(recon).all()
    assert torch.equal(m.decode(ids), recon)  # bare ids
    assert m.decode(two).shape == (2, 5 * m.hop)  # fewer levels decode
    # ragged batch == one by one (ids and decode); resampled input; save/load; a transformers directory
    items = [x[0, : 3 * m.hop - 7], x[1]]
    batch = m.encode(items)
    alone = m.encode(items[0])
    assert batch.lengths.tolist() == [3, 5] and alone.lengths.tolist() == [3]
    assert torch.equal(batch.ids[0, :3], alone.ids[0]) and (batch.ids[0, 3:] == PAD_ID).all()
    assert torch.equal(batch.ids[1], ids[1])
    decoded = m.decode(batch)
    torch.testing.assert_close(decoded[0, : 3 * m.hop], m.decode(alone)[0], atol=1e-5, rtol=1e-4)
    assert (decoded[0, 3 * m.hop:] == 0).all()
    torch.testing.assert_close(decoded[1], recon[1], atol=1e-5, rtol=1e-4)
    assert m.encode(x[:, : 2 * m.hop], 8000).ids.shape[1] == 4  # resampled to 16 kHz first: twice the frames
    m.save_pretrained(tmp_path / "g")
    loaded = gentok.load(tmp_path / "g")
    assert type(loaded) is cls and torch.equal(loaded.encode(x).ids, ids)
    m.model.save_pretrained(tmp_path / "hf")  # a transformers checkpoint directory, converted on load
    converted = gentok.load(tmp_path / "hf")
    assert type(converted) is cls and torch.equal(converted.encode(x).ids, ids)


def test_adapter_errors(tmp_path):
    cls, hf_cfg = _configs()["dac"]
    m = cls.from_hf_config(hf_cfg)
    with pytest.raises(ValueError, match="sample_rate"):
        m.encode(torch.zeros(1, 320), 16000.0)
    with pytest.raises(ValueError, match="channels"):
        m.encode(torch.zeros(1, 2, 320))
    with pytest.raises(ValueError, match="n_quantizers"):
        m.encode(torch.zeros(1, 320), n_quantizers=4)
    ids = m.encode(torch.randn(1, 320) * 0.1).ids
    with pytest.raises(ValueError, match="lie in"):
        m.decode(ids + 64)
    with pytest.raises(ValueError, match="integer ids"):
        m.decode(ids.float())
    with pytest.raises(ValueError, match="q <= 3"):
        m.decode(torch.zeros(1, 5, 4, dtype=torch.long))  # more levels than the model has
    with pytest.raises(ValueError, match="wraps 'encodec'"):
        EncodecCodec(HFCodecConfig(hf_config=m.config.hf_config))
    with pytest.raises(CheckpointError, match="does not exist|no config"):
        gentok.load(tmp_path / "missing")
    m.model.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").rename(tmp_path / "hf" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle"):  # pickled weights are refused, never unpickled
        gentok.load(tmp_path / "hf")
    with pytest.raises(TypeError, match="inference adapter"):
        m(torch.zeros(1, 320))
