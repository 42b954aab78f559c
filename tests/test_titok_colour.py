"""TiTok's colour tokens: the packed thumbnail cells round-trip exactly, carry any hue, count in the bit budget,
save and load, and bad configurations are refused."""

from __future__ import annotations

import itertools

import pytest
import torch

import gentok
from gentok.data.colour import hue_rotate
from gentok.quantizers import FSQConfig, VQConfig
from gentok.tokenizers.image import colour_path
from gentok.tokenizers.image.titok import TiTok, TiTokConfig


def small(quantizer=None, **kw):
    base = dict(image_size=32, patch_size=8, num_tokens=8, width=32, enc_depth=1, dec_depth=1, heads=2,
                quantizer=quantizer or VQConfig(dim=8, codebook_size=512), refine_channels=4, colour_tokens=4)
    base.update(kw)
    torch.manual_seed(0)
    return TiTok(TiTokConfig(**base))


def flat(colours: torch.Tensor, size: int = 32) -> torch.Tensor:
    """(b, 3) colours -> flat images (b, 3, size, size)."""
    return colours[:, :, None, None].expand(-1, -1, size, size).contiguous()


@pytest.mark.parametrize("q", [1, 2, 3])
def test_pack_unpack_is_a_bijection_on_every_level_triple(q):
    levels = 2**q
    triples = torch.tensor(list(itertools.product(range(levels), repeat=3)), dtype=torch.float32) / (levels - 1)
    thumb = triples[:, :, None, None]  # every colour as a 1 x 1 thumbnail: (L^3, 3, 1, 1)
    ids = colour_path.pack(thumb, q)
    assert ids.shape == (levels**3, 1)
    assert torch.equal(ids.flatten().sort().values, torch.arange(levels**3))  # one id each, filling [0, 2^3q)
    assert torch.equal(colour_path.unpack(ids, q), thumb)
    grid = thumb[:4].reshape(1, 4, 3).permute(0, 2, 1).reshape(1, 3, 2, 2)  # a 2 x 2 grid: cells in raster order
    assert torch.equal(colour_path.pack(grid, q), ids[:4].T)
    assert torch.equal(colour_path.unpack(colour_path.pack(grid, q), q), grid)


def test_cells_are_the_quantized_mean_colours():
    torch.manual_seed(1)
    x = torch.rand(3, 3, 32, 32)
    thumb = colour_path.thumbnail(x, 2, 3)
    means = x.reshape(3, 3, 2, 16, 2, 16).mean((3, 5))
    assert torch.allclose(thumb, (means * 7).round() / 7)
    assert ((thumb - means).abs() <= 0.5 / 7 + 1e-6).all()


@pytest.mark.parametrize("quantizer", [VQConfig(dim=8, codebook_size=512), FSQConfig(dim=4, levels=(8, 8, 4, 4))])
def test_a_flat_colour_keeps_its_colour_at_every_hue(quantizer):
    """With the learned detail switched off, decode(encode(x)) is the upsampled thumbnail: a flat image of any hue
    comes back as its own colour, quantized to 3 bits per channel; the colour ids are the packed mean colours."""
    m = small(quantizer).eval()
    with torch.no_grad():
        m.to_pixels.weight.zero_()
        m.to_pixels.bias.zero_()
    base = torch.tensor([[0.2, 0.8, 0.1], [0.9, 0.85, 0.15], [0.5, 0.5, 0.5], [0.05, 0.3, 0.95]])
    for degrees in range(0, 360, 60):
        x = hue_rotate(flat(base), degrees)
        tokens = m.encode(x)
        colour_ids = tokens.ids[:, m.config.learned_tokens:]
        expected = (x.mean((2, 3)) * 7).round() / 7  # (b, 3)
        assert torch.equal(colour_path.unpack(colour_ids, 3), flat(expected, 2))
        recon = m.decode(tokens)
        assert torch.allclose(recon, flat(expected), atol=1e-5), degrees
        assert (recon.mean((2, 3)) - x.mean((2, 3))).abs().max() <= 0.5 / 7 + 1e-5


def test_ids_bits_and_forward_agree(tmp_path):
    m = small()
    torch.manual_seed(2)
    x = torch.rand(4, 3, 32, 32)
    m(x)  # a training pass (k-means init)
    m.eval()
    tokens = m.encode(x)
    # K = 4 learned + 4 colour tokens, one vocabulary: the budget counts both, 9 bits each
    assert tokens.ids.shape == (4, 8) and m.tokens_per_item == 8 and int(tokens.ids.max()) < m.vocab_size
    assert torch.equal(tokens.bits_per_item, torch.full((4,), 8 * 9.0, dtype=torch.float64))
    assert torch.equal(tokens.ids[:, 4:], colour_path.pack(colour_path.thumbnail(x, 2, 3), 3))
    out = m(x)
    assert torch.equal(out.ids, tokens.ids)
    assert torch.allclose(out.recon, m.decode(tokens), atol=1e-5)
    # the colour cells steer the picture: other cells, other colours, same learned ids
    other = tokens.ids.clone()
    other[:, 4:] = 0  # black cells
    assert float(m.decode(other).mean()) < float(m.decode(tokens.ids).mean()) - 0.1
    m.save_pretrained(tmp_path / "tok")
    r = gentok.load(tmp_path / "tok")
    assert r.config.colour_tokens == 4 and r.config.learned_tokens == 4
    assert torch.equal(r.encode(x).ids, tokens.ids)
    assert torch.equal(r.decode(tokens.ids), m.decode(tokens.ids))


def test_without_the_decoder_reading_the_cells_they_still_paint_the_colours():
    m = small(colour_condition=False).eval()
    assert m.from_colour is None and m.colour_pos is None
    with torch.no_grad():
        m.to_pixels.weight.zero_()
        m.to_pixels.bias.zero_()
    x = flat(torch.tensor([[0.2, 0.8, 0.1]]))
    assert torch.allclose(m.decode(m.encode(x)), flat(torch.tensor([[1 / 7, 6 / 7, 1 / 7]])), atol=1e-5)


def test_sampled_ids_past_the_packed_range_still_decode():
    """A 1000-code vocabulary packs 3 bits per channel (ids < 512); a generator may sample any id below 1000."""
    m = small(VQConfig(dim=8, codebook_size=1000)).eval()
    assert m.colour_q == 3
    ids = torch.full((1, 8), 999)
    thumb = colour_path.unpack(ids[:, 4:], 3)
    assert float(thumb.min()) >= 0 and float(thumb.max()) <= 1
    y = m.decode(ids)
    assert y.shape == (1, 3, 32, 32) and torch.isfinite(y).all()


def test_without_colour_tokens_nothing_changes():
    """colour_tokens=0 (the default, and every config saved before the option) builds the same model."""
    plain = small(colour_tokens=0)
    assert plain.from_colour is None and plain.config.learned_tokens == 8
    assert not any("colour" in k for k in plain.state_dict())
    assert TiTokConfig().colour_tokens == 0


@pytest.mark.parametrize("kw, match", [
    (dict(colour_tokens=3), "square"),
    (dict(colour_tokens=-4), "square"),
    (dict(colour_tokens=9), "must leave learned tokens"),
    (dict(colour_tokens=4, num_tokens=4), "must leave learned tokens"),
    (dict(quantizer=None, vae_dim=4), "quantizer"),
    (dict(pixel_range="unit"), "signed"),
])
def test_bad_configs_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        small(**kw)


def test_a_codebook_too_small_for_one_bit_per_channel_is_refused():
    with pytest.raises(ValueError, match="at least 8 codes"):
        small(VQConfig(dim=8, codebook_size=4))
    assert small(VQConfig(dim=8, codebook_size=8)).colour_q == 1
