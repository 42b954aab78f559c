"""TiTok: API round trips, save/load, CLI, input validation, and that the tiny preset can overfit."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import gentok
from gentok.cli import main as cli
from gentok.data.images import default_image_data
from gentok.metrics import psnr
from gentok.quantizers import FSQConfig, VQConfig
from gentok.tokenizers.image.titok import PRESETS, TiTok, TiTokConfig, preset
from gentok.tokenizers.tokens import Tokens
from gentok.validate import PAD_ID


def small(quantizer=None, **kw):
    base = dict(image_size=32, patch_size=8, num_tokens=6, width=32, enc_depth=1, dec_depth=1, heads=2,
                quantizer=quantizer or VQConfig(dim=8, codebook_size=64), refine_channels=4)
    base.update(kw)
    torch.manual_seed(0)
    return TiTok(TiTokConfig(**base))


@pytest.fixture(scope="module")
def crops():
    train, _ = default_image_data(32, train_length=64)
    return torch.stack([train[i] for i in range(8)])


@pytest.mark.parametrize("quantizer", [VQConfig(dim=8, codebook_size=64), FSQConfig(dim=4, levels=(5, 4, 4, 3))])
def test_encode_decode_shapes_and_consistency(quantizer, crops):
    m = small(quantizer)
    m(crops)  # one training-mode pass (k-means init for VQ)
    m.eval()
    tokens = m.encode(crops)
    ids = tokens.ids
    assert isinstance(tokens, Tokens) and ids.shape == (8, 6) and ids.dtype == torch.long
    assert torch.equal(tokens.lengths, torch.full((8,), 6)) and m.tokens_per_item == 6
    assert 0 <= int(ids.min()) and int(ids.max()) < m.vocab_size
    out = m.decode(tokens)
    assert out.shape == crops.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    assert torch.equal(m.decode(ids), out)  # bare ids decode like the Tokens
    # decode(encode(x)) is exactly the eval-mode forward reconstruction
    fwd = m(crops)
    assert torch.equal(fwd.ids, ids)
    assert torch.allclose(fwd.recon, out, atol=1e-5)
    # one meaning for bits: per token (log2 of the vocabulary), and per item = per token x K
    assert m.bits_per_token == pytest.approx(m.quantizer.bits_per_token)
    assert torch.allclose(tokens.bits_per_item, torch.full((8,), 6 * m.bits_per_token, dtype=torch.float64))
    assert not hasattr(m, "bits_per_sample")
    # batched == one by one, except that a latent at a tie between two codes (equally near to float rounding) may
    # pick either with the batch's rounding
    single = torch.cat([m.encode(crops[i:i + 1]).ids for i in range(8)])
    differ = single != ids
    assert differ.float().mean() <= 0.05
    if differ.any():
        z = torch.nn.functional.normalize(m._encode_latents(crops), dim=-1)

        def similarity(i):
            return (z * torch.nn.functional.normalize(m.quantizer.decode(i), dim=-1)).sum(-1)[differ]

        assert torch.allclose(similarity(ids), similarity(single), atol=1e-4)


def test_save_load_round_trip(tmp_path, crops):
    m = small()
    m(crops)
    m.eval()
    m.save_pretrained(tmp_path / "tok")
    r = gentok.load(tmp_path / "tok")
    ids = m.encode(crops).ids
    assert torch.equal(r.encode(crops).ids, ids)
    assert torch.equal(r.decode(ids), m.decode(ids))
    assert [k for k in r.state_dict()] == [k for k in m.state_dict()]


def test_pil_and_path_inputs(tmp_path, crops):
    m = small().eval()
    arr = (crops[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    big = Image.fromarray(arr).resize((96, 64))  # non-square, other size: centre-cropped and resized
    big.save(tmp_path / "a.png")
    from_pil = m.encode([big]).ids
    from_path = m.encode([str(tmp_path / "a.png")]).ids
    assert from_pil.shape == (1, 6) and torch.equal(from_pil, from_path)


def test_bad_input_names_the_problem(crops):
    m = small().eval()
    with pytest.raises(ValueError, match=r"\(b, 3, 32, 32\)"):
        m.encode(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(b, 3, 32, 32\)"):
        m.encode(torch.rand(2, 3, 48, 48))
    bad = crops.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        m.encode(bad)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.encode(crops * 255)
    with pytest.raises(ValueError, match="dtype"):
        m.encode((crops * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="at least one"):
        m.encode(crops[:0])
    ids = m.encode(crops).ids
    with pytest.raises(ValueError, match="must lie in"):
        m.decode(ids + m.vocab_size)
    with pytest.raises(ValueError, match="must lie in"):
        m.decode(ids - 100)
    with pytest.raises(ValueError, match="shape"):
        m.decode(ids[:, :3])
    with pytest.raises(ValueError, match="integer"):
        m.decode(ids.float())
    with pytest.raises(ValueError, match="empty"):
        m.decode(ids[:0])


def test_decode_rejects_padded_ids(crops):
    """TiTok is fixed-length: an item with fewer than K ids (padding, or Tokens lengths < K) is refused, not
    decoded from whatever the padding would turn into."""
    m = small().eval()
    tokens = m.encode(crops[:2])
    padded = tokens.ids.clone()
    padded[1, 4:] = PAD_ID
    with pytest.raises(ValueError, match="fixed-length"):
        m.decode(padded)
    short = Tokens(padded, torch.tensor([6, 4]), tokens.meta)
    with pytest.raises(ValueError, match="fixed-length"):
        m.decode(short)
    with pytest.raises(ValueError, match="padding"):  # -1 inside an item, not only past its end
        m.decode(Tokens(padded, torch.tensor([6, 6]), tokens.meta))
    with pytest.raises(ValueError, match="does not exist"):
        m.encode(["/no/such/image.png"])


def test_cli_encode_decode_info(tmp_path, crops, capsys):
    m = small()
    m(crops)
    m.eval().save_pretrained(tmp_path / "tok")
    paths = []
    for i in range(3):
        arr = (crops[i].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        Image.fromarray(arr).save(tmp_path / f"img{i}.png")
        paths.append(str(tmp_path / f"img{i}.png"))
    assert cli(["encode", "--model", str(tmp_path / "tok"), *paths, "--out", str(tmp_path / "t.safetensors")]) == 0
    assert cli(["decode", "--model", str(tmp_path / "tok"), str(tmp_path / "t.safetensors"),
                "--out", str(tmp_path / "dec")]) == 0
    decoded = sorted((tmp_path / "dec").glob("*.png"))
    assert [p.name for p in decoded] == ["img0.png", "img1.png", "img2.png"]
    # the files decode to what the API decodes
    from gentok.data.photos import load_image

    api = m.decode(m.encode(paths))
    tokens, header = Tokens.load_with_header(tmp_path / "t.safetensors")
    assert torch.equal(tokens.ids, m.encode(paths).ids) and header["names"] == ["img0.png", "img1.png", "img2.png"]
    assert torch.allclose(load_image(decoded[1]), api[1], atol=1 / 255 + 1e-6)
    assert cli(["info", str(tmp_path / "tok")]) == 0
    assert "titok" in capsys.readouterr().out
    # errors are reported, not raised as tracebacks
    assert cli(["decode", "--model", str(tmp_path / "tok"), str(tmp_path / "img0.png"), "--out", str(tmp_path)]) == 2
    assert cli(["encode", "--model", str(tmp_path / "nope"), *paths, "--out", str(tmp_path / "x")]) == 2


def test_presets_are_valid_and_paper_sized():
    assert {"tiny", "S-128", "B-64", "L-32"} <= set(PRESETS)
    assert preset("L-32").num_tokens == 32 and preset("B-64").num_tokens == 64 and preset("S-128").num_tokens == 128
    for name in ("S-128", "B-64", "L-32"):
        q = preset(name).quantizer
        assert (q.codebook_size, q.dim, q.cosine) == (4096, 12, True) and preset(name).image_size == 256
    # the CPU presets' bit budgets, which their equal-bit baselines are sized from: 32 x 9 and 64 x 5 bits
    for name, tokens, codes in (("tiny", 32, 512), ("small", 64, 32)):
        c = preset(name)
        assert (c.num_tokens, c.quantizer.codebook_size) == (tokens, codes)
    assert preset("small").num_tokens == (preset("small").image_size // preset("small").patch_size) ** 2
    with pytest.raises(ValueError, match="unknown TiTok preset"):
        preset("XL")
    with pytest.raises(ValueError, match="multiple"):
        TiTokConfig(image_size=30, patch_size=8)


def test_tiny_overfits_a_fixed_batch():
    """The tiny preset memorises 4 crops to > 30 dB PSNR (eval-mode encode -> decode; ~250 of the 1200 steps allowed,
    with 1 or 2 threads)."""
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    train, _ = default_image_data(64, train_length=4, scales="native")  # native crops: the hardest detail to memorise
    x = torch.stack([train[i] for i in range(4)])
    torch.manual_seed(0)
    m = TiTok(preset("tiny"))
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3, fused=True)
    best = 0.0
    for step in range(1200):
        m.train()
        out = m(x)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if step % 50 == 49:
            m.eval()
            best = float(psnr(m.decode(m.encode(x)), x).mean())
            if best > 30:
                break
    assert best > 30, best


def test_token_mixing_starts_as_spatial_pooling():
    from gentok.tokenizers.image.titok import _band_matrix

    for tokens, patches in ((32, 16), (32, 64), (7, 16)):
        m = _band_matrix(tokens, patches)
        assert (m.sum(0) >= 1).all(), "every patch feeds some token"
        assert (m.sum(1) >= 1).all(), "every token pools some patch"
        rows = [torch.nonzero(r).flatten() for r in m]
        assert all((r[1:] - r[:-1] == 1).all() for r in rows), "bands are contiguous"
    model = small(token_mixing=True)
    assert torch.allclose(model.encoder.mix.sum(1), torch.ones(6))
    assert torch.allclose(model.dec_mix.sum(1), torch.ones(16))
    assert small(token_mixing=False).encoder.mix is None


def test_report_summary_shows_perceptual_figures(tmp_path, capsys):
    """With --perceptual-weights the rFD and feature error reach the console summary, not only eval.json."""
    from gentok.evaluation.image import evaluate_image_tokenizer, write_report

    _, held_out = default_image_data(32, train_length=8, eval_length=4)
    m = small().eval()
    report = evaluate_image_tokenizer(m, held_out)
    assert "rfd" not in report
    report.update(rfd=1.25, feature_l2=0.5)  # what perceptual_metrics adds when a local vision model is given
    write_report(report, m, held_out, str(tmp_path))
    out = capsys.readouterr().out
    assert "rFD 1.250" in out and "feature L2 0.500" in out


def test_coarse_head_is_smooth_across_patch_borders(tmp_path):
    """The coarse head's contribution is a bilinear upsampling of one colour per patch: no step at patch borders."""
    def steps(images):  # |horizontal neighbour differences|, split into across a patch border / inside a patch
        d = (images[..., 1:] - images[..., :-1]).abs()
        border = torch.zeros(d.shape[-1], dtype=torch.bool)
        border[7::8] = True  # between columns 8k-1 and 8k
        return d[..., border].amax(), d[..., ~border].amax()

    ids = torch.randint(0, 64, (3, 6))
    model = small(coarse_head=True, refine_channels=0)
    with torch.no_grad():
        model.to_pixels.weight.zero_()
        model.to_pixels.bias.zero_()
        model.to_coarse.weight.normal_(0, 0.3)
    across, inside = steps(model.decode(ids))
    assert inside > 1e-3 and across <= inside + 1e-5
    plain = small(refine_channels=0)  # the patch-wise head alone, constant inside each patch: steps only at borders
    with torch.no_grad():  # every red pixel of a patch: one linear function of the patch's decoder state
        plain.to_pixels.weight.zero_()
        plain.to_pixels.bias.zero_()
        plain.to_pixels.weight[0::3] = torch.randn(1, plain.to_pixels.weight.shape[1]) * 0.3
    across, inside = steps(plain.decode(ids)[:, :1])
    assert inside < 1e-6 and across > 1e-3
    model.save_pretrained(tmp_path / "m")
    again = gentok.load(tmp_path / "m")
    assert again.config.coarse_head and torch.equal(again.decode(ids), model.decode(ids))
    with pytest.raises(ValueError, match="coarse_head"):
        TiTokConfig(image_size=32, patch_size=8, coarse_head=True, out_conv=True)
