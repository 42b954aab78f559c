"""Binary latents: the Bernoulli/STE bit quantizer and the 1D binary image tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import gentok
from gentok.cli import main as cli
from gentok.quantizers import BinaryConfig, FSQConfig, LFQConfig, build_quantizer
from gentok.quantizers.binary import pack_bits, unpack_bits
from gentok.tokenizers.image.binary import BinaryTokenizer, BinaryTokenizerConfig, pack_bytes, unpack_bytes


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
    assert torch.equal(unpack_bytes(pack_bytes(bits), b), bits)
    assert pack_bytes(bits).shape[-1] == (b + 7) // 8
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
def test_tokenizer_bits_and_exact_rate():
    tok = _tok()
    x = torch.rand(3, 3, 16, 16)
    bits = tok.encode(x)
    assert bits.dtype == torch.uint8 and bits.shape == (3, 6, 8) and set(bits.unique().tolist()) <= {0, 1}
    assert tok.bits_per_sample == 6 * 8 and tok.vocab_size == 2**8
    assert torch.equal(tok.decode(bits), tok.decode(tok.encode_ids(x)))
    assert torch.equal(tok.decode(bits.bool()), tok.decode(bits))
    y = tok.decode(bits)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    # batched == one by one
    assert torch.equal(torch.cat([tok.encode(x[i:i + 1]) for i in range(3)]), bits)


def test_lfq_alternative_through_config():
    tok = _tok(LFQConfig(dim=8, codebook_size=2**5))
    x = torch.rand(2, 3, 16, 16)
    bits = tok.encode(x)
    assert bits.shape == (2, 6, 5) and tok.bits_per_sample == 30
    ids = tok.encode_ids(x)
    assert torch.equal(pack_bits(bits), ids)
    assert tok.decode(bits).shape == (2, 3, 16, 16)


def test_decode_rejects_bad_tokens():
    tok = _tok()
    with pytest.raises(ValueError, match="shape"):
        tok.decode(torch.zeros(1, 6, 7, dtype=torch.uint8))
    with pytest.raises(ValueError, match="0 or 1"):
        tok.decode(torch.full((1, 6, 8), 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="integer"):
        tok.decode(torch.zeros(1, 6, 8))
    with pytest.raises(ValueError, match="shape"):
        tok.encode(torch.rand(1, 3, 8, 8))
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
    assert torch.equal(loaded.encode(x), tok.encode(x))
    assert torch.equal(loaded.decode(tok.encode(x)), tok.decode(tok.encode(x)))
    paths = []
    for i in range(2):
        p = tmp_path / f"im{i}.png"
        Image.fromarray((np.random.default_rng(i).random((16, 16, 3)) * 255).astype(np.uint8)).save(p)
        paths.append(str(p))
    tokens = tmp_path / "tokens.safetensors"
    assert cli(["encode", "--model", str(tmp_path / "model"), *paths, "--out", str(tokens)]) == 0
    with safe_open(str(tokens), "pt") as f:
        packed = f.get_tensor("packed_bits")
    assert packed.dtype == torch.uint8 and packed.shape == (2, 6, 1)  # 8 bits per token in one byte
    assert torch.equal(unpack_bytes(packed, 8), tok.encode(paths))
    assert cli(["decode", "--model", str(tmp_path / "model"), str(tokens), "--out", str(tmp_path / "out")]) == 0
    expected = tok.decode(tok.encode(paths))
    for i in range(2):
        png = np.asarray(Image.open(tmp_path / "out" / f"im{i}.png")).astype(np.float32) / 255
        assert np.abs(png - expected[i].permute(1, 2, 0).numpy()).max() <= 1 / 255 + 1e-6
    # the other token forms a user may store decode too
    for key, value in (("bits", tok.encode(paths)), ("ids", tok.encode_ids(paths))):
        written = tok.decode_to_files({key: value}, tmp_path / key, ["a", "b"])
        assert [p.name for p in written] == ["a.png", "b.png"]
    with pytest.raises(ValueError, match="packed_bits"):
        tok.decode_to_files({"codes": torch.zeros(1)}, tmp_path / "x", ["a"])
