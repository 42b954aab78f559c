"""Binary latents: the Bernoulli/STE bit quantizer and the 1D binary image tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import gentok
from gentok.cli import main as cli
from gentok.evaluation.image import bit_usage
from gentok.quantizers import BinaryConfig, FSQConfig, LFQConfig, build_quantizer
from gentok.quantizers.binary import pack_bits, unpack_bits
from gentok.tokenizers.image.binary import BinaryTokenizer, BinaryTokenizerConfig
from gentok.tokenizers.tokens import Tokens


def _tok(quantizer=None, seed=0) -> BinaryTokenizer:
    torch.manual_seed(seed)
    cfg = BinaryTokenizerConfig(image_size=16, patch_size=4, num_tokens=6, width=32, enc_depth=1, dec_depth=1,
                                heads=2, quantizer=quantizer or BinaryConfig(dim=8, bits=8, anneal_steps=10))
    return BinaryTokenizer(cfg).eval()


# -- the quantizer ---------------------------------------------------------------------------------------------------
def test_eval_bits_are_exactly_binary_thresholds():
    q = build_quantizer(BinaryConfig(dim=5, bits=7)).eval()
    z = torch.randn(3, 11, 5)
    bits = q.encode_bits(z)
    assert bits.dtype == torch.uint8 and bits.shape == (3, 11, 7)
    assert set(bits.unique().tolist()) <= {0, 1}
    assert torch.equal(bits.bool(), torch.sigmoid(q.logits(z)) > 0.5)
    out = q(z)
    assert torch.allclose(out.quantized, (bits.float() * 2 - 1) @ q.embed, atol=1e-6)  # bits times the matrix
    assert torch.allclose(q.decode_bits(bits), out.quantized, atol=1e-6)


def test_ste_gradient_is_the_sigmoid_gradient_at_every_temperature():
    q = build_quantizer(BinaryConfig(dim=6, bits=6, temperature=1.0, anneal_steps=2)).train()
    g = torch.randn(2, 9, 6)
    for _ in range(3):  # T = 1, T = 0.5, then T = 0 (hard threshold): gradient must flow in all three
        z = torch.randn(2, 9, 6, requires_grad=True)
        (q(z).quantized * g).sum().backward()
        z2 = z.detach().clone().requires_grad_(True)
        ((2 * torch.sigmoid(z2) - 1) @ q.embed * g).sum().backward()
        assert z.grad.abs().sum() > 0 and torch.allclose(z.grad, z2.grad, atol=1e-6)


def test_temperature_anneals_to_zero_then_training_equals_eval():
    q = build_quantizer(BinaryConfig(dim=4, bits=4, temperature=2.0, anneal_steps=4, entropy_weight=0.0))
    z = torch.zeros(8, 64, 4) + 0.01  # logits near 0: Bernoulli sampling flips many bits while T > 0
    q.train()
    temps = []
    for _ in range(6):
        temps.append(q.temperature)
        train_idx = q(z).indices
    assert temps[:5] == [2.0, 1.5, 1.0, 0.5, 0.0] and temps[5] == 0.0
    q.eval()
    assert torch.equal(train_idx, q(z).indices)  # at T = 0 training sees exactly the eval bits
    fresh = build_quantizer(q.config).train()
    fresh.load_state_dict(q.state_dict())  # the schedule position is saved with the weights (resume continues it)
    assert fresh.temperature == 0.0
    hot = build_quantizer(BinaryConfig(dim=4, bits=4, temperature=1.0, anneal_steps=100)).train()
    assert not torch.equal(hot(z).indices, hot(z).indices)  # sampling at T > 0 is stochastic


def test_entropy_loss_pushes_probabilities_to_zero_or_one():
    torch.manual_seed(0)
    q = build_quantizer(BinaryConfig(dim=4, bits=4, entropy_weight=1.0)).train()
    z = (torch.randn(4, 16, 4) * 0.3).requires_grad_(True)
    opt = torch.optim.SGD([z], lr=2000.0)  # the loss is a mean over 256 bits
    start = (torch.sigmoid(z) - 0.5).abs().mean().item()
    for _ in range(20):
        opt.zero_grad()
        q(z).loss.backward()
        opt.step()
    assert (torch.sigmoid(z) - 0.5).abs().mean().item() > start + 0.1


@pytest.mark.parametrize("b", [1, 10, 33, 62])
def test_pack_unpack_round_trip(b):
    g = torch.Generator().manual_seed(b)
    bits = torch.randint(0, 2, (3, 5, b), generator=g, dtype=torch.uint8)
    ids = pack_bits(bits)
    assert ids.dtype == torch.long and (ids >= 0).all()
    assert torch.equal(unpack_bits(ids, b), bits)
    assert torch.equal(pack_bits(unpack_bits(ids, b)), ids)
    top = torch.ones(1, b, dtype=torch.bool)  # all ones: the largest id, 2**b - 1
    assert int(pack_bits(top)) == 2**b - 1


def test_pack_rejects_bad_bits():
    with pytest.raises(ValueError, match="0 or 1"):
        pack_bits(torch.tensor([[0, 2, 1]]))
    with pytest.raises(ValueError, match="62"):
        pack_bits(torch.zeros(2, 63, dtype=torch.long))
    with pytest.raises(ValueError, match="range"):
        unpack_bits(torch.tensor([16]), 4)
    with pytest.raises(ValueError, match="bits"):
        BinaryConfig(bits=63)


# -- the tokenizer ---------------------------------------------------------------------------------------------------
def test_encode_returns_packed_ids_and_encode_bits_the_same_bits():
    tok = _tok()
    x = torch.rand(3, 3, 16, 16)
    tokens = tok.encode(x)
    assert isinstance(tokens, Tokens) and tokens.ids.shape == (3, 6) and tokens.ids.dtype == torch.long
    assert tok.tokens_per_item == 6 and 0 <= int(tokens.ids.min()) and int(tokens.ids.max()) < tok.vocab_size
    bits = tok.encode_bits(x)
    assert bits.dtype == torch.uint8 and bits.shape == (3, 6, 8) and set(bits.unique().tolist()) <= {0, 1}
    # encode and encode_bits are one encoding: the ids are the bits packed MSB-first, and back
    assert torch.equal(pack_bits(bits), tokens.ids)
    assert torch.equal(tok.to_bits(tokens), bits) and torch.equal(tok.to_bits(tokens.ids), bits)
    # the rate: exactly B bits per token, K x B per image
    assert tok.vocab_size == 2**8 and tok.bits_per_token == 8 and not hasattr(tok, "bits_per_sample")
    assert torch.equal(tokens.bits_per_item, torch.full((3,), 48.0, dtype=torch.float64))
    y = tok.decode(tokens)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    assert torch.equal(tok.decode(tokens.ids), y)
    # batched == one by one
    assert torch.equal(torch.cat([tok.encode(x[i:i + 1]).ids for i in range(3)]), tokens.ids)
    assert torch.equal(torch.cat([tok.encode_bits(x[i:i + 1]) for i in range(3)]), bits)


def test_removed_shims_are_gone_and_bits_are_refused():
    """`encode_ids` and `decode(bits)` were removed (CHANGELOG): bits (b, K, B) are refused with a message, and
    `pack_bits` turns them into the ids `decode` takes."""
    from gentok.quantizers.binary import pack_bits

    tok = _tok()
    x = torch.rand(2, 3, 16, 16)
    tokens = tok.encode(x)
    assert not hasattr(tok, "encode_ids")
    bits = tok.encode_bits(x)
    with pytest.raises(ValueError):
        tok.decode(bits)
    assert torch.equal(tok.decode(pack_bits(bits)), tok.decode(tokens))


def test_lfq_alternative_through_config():
    tok = _tok(LFQConfig(dim=8, codebook_size=2**5))
    x = torch.rand(2, 3, 16, 16)
    bits = tok.encode_bits(x)
    assert bits.shape == (2, 6, 5) and tok.bits_per_token == 5
    tokens = tok.encode(x)
    assert torch.equal(pack_bits(bits), tokens.ids)
    assert torch.equal(tokens.bits_per_item, torch.full((2,), 30.0, dtype=torch.float64))
    assert tok.decode(tokens).shape == (2, 3, 16, 16)


def test_decode_rejects_bad_tokens():
    tok = _tok()
    ids = tok.encode(torch.rand(1, 3, 16, 16)).ids
    with pytest.raises(ValueError, match="must lie in"):
        tok.decode(ids + tok.vocab_size)
    with pytest.raises(ValueError, match="fixed-length"):
        tok.decode(torch.cat([ids[:, :5], torch.full((1, 1), -1)], 1))
    with pytest.raises(ValueError, match="shape"):
        tok.decode(ids[:, :5])
    with pytest.raises(ValueError, match="shape"):  # bits (b, K, B) are not ids: pack_bits them first
        tok.decode(torch.zeros(1, 6, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        tok.decode(torch.zeros(1, 6))
    with pytest.raises(ValueError, match="shape"):
        tok.encode(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        tok.encode_bits(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="BinaryConfig or LFQConfig"):
        BinaryTokenizerConfig(quantizer=FSQConfig())


def test_overfits_one_batch():
    tok = _tok(BinaryConfig(dim=8, bits=8, anneal_steps=20)).train()
    torch.manual_seed(1)  # smooth images (upsampled 4x4 noise): 48 bits can describe each of them
    x = torch.nn.functional.interpolate(torch.rand(4, 3, 4, 4), size=(16, 16), mode="bilinear")
    opt = torch.optim.AdamW(tok.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        out = tok(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.metrics["recon_loss"]))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_save_load_and_cli_round_trip(tmp_path):
    tok = _tok()
    tok.save_pretrained(tmp_path / "model")
    loaded = gentok.load(tmp_path / "model")
    assert type(loaded) is BinaryTokenizer and loaded.config == tok.config
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(loaded.encode(x).ids, tok.encode(x).ids)
    assert torch.equal(loaded.encode_bits(x), tok.encode_bits(x))
    assert torch.equal(loaded.decode(tok.encode(x)), tok.decode(tok.encode(x)))
    paths = []
    for i in range(2):
        p = tmp_path / f"im{i}.png"
        Image.fromarray((np.random.default_rng(i).random((16, 16, 3)) * 255).astype(np.uint8)).save(p)
        paths.append(str(p))
    tokens = tmp_path / "tokens.safetensors"
    assert cli(["encode", "--model", str(tmp_path / "model"), *paths, "--out", str(tokens)]) == 0
    with safe_open(str(tokens), "pt") as f:  # the generic token file: packed ids, no family-specific tensors
        assert sorted(f.keys()) == ["ids", "lengths"]
    stored, _ = Tokens.load(tokens)
    assert torch.equal(stored.ids, tok.encode(paths).ids) and stored.bits_per_token == 8
    assert cli(["decode", "--model", str(tmp_path / "model"), str(tokens), "--out", str(tmp_path / "out")]) == 0
    expected = tok.decode(tok.encode(paths))
    for i in range(2):
        png = np.asarray(Image.open(tmp_path / "out" / f"im{i}.png")).astype(np.float32) / 255
        assert np.abs(png - expected[i].permute(1, 2, 0).numpy()).max() <= 1 / 255 + 1e-6
    # bare ids decode to files too
    written = tok.decode_to_files(tok.encode(paths).ids, tmp_path / "ids", ["a", "b"])
    assert [p.name for p in written] == ["a.png", "b.png"]


def test_evaluation_reports_bit_usage(tmp_path, capsys):
    """The one image evaluation gives a bit tokenizer per-bit utilisation, and its summary prints that rather than
    the share of the 2**B packed patterns hit."""
    from gentok.evaluation.image import evaluate_image_tokenizer, image_eval_fn, write_report

    tok = _tok()
    images = [torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    report = evaluate_image_tokenizer(tok, images, batch_size=2)
    x = torch.stack(images)
    usage = bit_usage(tok.encode_bits(x))
    assert {k: report[k] for k in usage} == usage
    assert report["bits_per_image"] == 48 and report["images"] == 5 and "by_tokens" not in report
    assert report["psnr"] == pytest.approx(float(gentok.metrics.psnr(tok.decode(tok.encode(x)), x).mean()), abs=1e-4)
    write_report(report, tok, images, str(tmp_path))
    out = capsys.readouterr().out
    assert "bits used" in out and "codebook usage" not in out
    assert (tmp_path / "eval.json").is_file() and (tmp_path / "reconstructions.png").is_file()
    hook = image_eval_fn(tok, torch.utils.data.DataLoader(x, batch_size=2))
    assert hook["bits_used"] == usage["bits_used"] and "bit_entropy" not in hook and "psnr" in hook


def test_bit_usage_measures_each_bit():
    bits = torch.zeros(4, 3, 3, dtype=torch.uint8)
    bits[:2, :, 0] = 1  # bit 0 on for half the images at every position
    bits[:, :, 2] = 1  # bits 1 and 2 constant (off, on): no information, and no NaN either
    u = bit_usage(bits)
    assert u["bit_entropy"] == pytest.approx([1.0, 0.0, 0.0], abs=1e-6) and u["bits_used"] == pytest.approx(1 / 3)
    assert u["bit_ones"] == pytest.approx(0.5) and u["bit_entropy_per_position"] == pytest.approx(1 / 3, abs=1e-6)
    assert u["bit_entropy_min"] == 0.0
