"""MergeDNA model: merging inside the model, the three training terms, overfitting, save/load, API and CLI."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gentok
from gentok.cli import main as cli
from gentok.config import replace
from gentok.tokenizers.dna import PRESETS, DNATokens, MergeDNA, MergeDNAConfig, read_fasta
from gentok.tokenizers.dna.fasta import N, codes_to_text
from gentok.tokenizers.dna.losses import base_targets

TINY = replace(PRESETS["tiny"], latent_weight=0.0, mask_weight=0.0)
torch.set_num_threads(1)


def _random_codes(n, seed):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 4, n))


@pytest.fixture(scope="module")
def trained():
    """A tiny MergeDNA overfit on one 128-base sequence (reconstruction term only, for speed)."""
    torch.manual_seed(0)
    model = MergeDNA(TINY)
    seq = _random_codes(128, 0).view(2, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(250):
        out = model(seq, tokens_per_window=4)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    return model, codes_to_text(seq.flatten().numpy())


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of window"):
        MergeDNAConfig(seq_len=100, window=16)
    with pytest.raises(ValueError, match="tokens_per_window 1 must lie in"):
        MergeDNAConfig(tokens_per_window=1)
    with pytest.raises(ValueError, match="divisible"):
        MergeDNAConfig(dim=30, heads=4)


@pytest.mark.parametrize("t", [2, 3, 4, 8])
def test_local_encoder_tokens_are_contiguous_in_window_spans(t):
    torch.manual_seed(0)
    model = MergeDNA(TINY).eval()
    bases = torch.randint(0, 4, (3, 64))
    tokens, lengths, source = model._local_encode(bases, t)
    w = TINY.window
    assert tokens.shape == (3, 64 // w * t, TINY.dim)
    assert (lengths.sum(-1) == 64).all() and (lengths >= 1).all()
    assert torch.allclose(source.sum(1), torch.ones(source.shape[0], w))  # every base in exactly one token
    ends = lengths.cumsum(-1)
    starts = ends - lengths
    assert ((starts // w) == ((ends - 1) // w)).all()  # no token crosses a window
    assert (lengths.view(3, -1, t).sum(-1) == w).all()


def test_no_merging_reduces_to_per_base_cross_entropy():
    torch.manual_seed(0)
    model = MergeDNA(TINY).eval()
    bases = torch.randint(0, 5, (2, 64))  # includes N, which is never scored
    out = model(bases, tokens_per_window=TINY.window)
    tokens, lengths = model.local_encode(bases, TINY.window)
    assert (lengths == 1).all()
    code = model._quantize(model.latent_encoder(tokens))[0]
    logits = model.decode_tokens(code, lengths, 64)
    scored = bases < 4
    expected = F.cross_entropy(logits[scored], bases[scored])
    assert torch.allclose(out.metrics["recon_loss"], expected, atol=1e-6)


def test_latent_term_gives_local_encoder_zero_gradient():
    torch.manual_seed(0)
    model = MergeDNA(PRESETS["tiny"])
    bases = torch.randint(0, 4, (2, 64))
    tokens, lengths = model.local_encode(bases, 4)
    loss, _, q_loss = model.latent_loss(tokens.detach(), lengths, base_targets(bases))
    (loss + q_loss).backward()
    local = [p for m in (model.local_blocks, model.local_norm, model.embed) for p in m.parameters()]
    assert all(p.grad is None or not p.grad.any() for p in local)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.latent_encoder.parameters())
    # and the full objective does train the local encoder (through the other two terms)
    model.zero_grad()
    model.train()(bases).loss.backward()
    assert model.local_blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_forward_reports_all_terms():
    torch.manual_seed(0)
    model = MergeDNA(PRESETS["tiny"]).train()
    out = model(torch.randint(0, 4, (2, 64)))
    assert {"recon_loss", "latent_loss", "mask_loss", "recon_acc", "mask_acc"} <= set(out.metrics)
    assert torch.isfinite(out.loss)


def test_tiny_model_overfits_a_sequence(trained):
    model, text = trained
    tokens = model.encode(text)
    decoded = model.decode(tokens)[0]
    acc = np.mean(np.frombuffer(decoded.encode(), np.uint8) == np.frombuffer(text.encode(), np.uint8))
    assert acc > 0.9, acc
    assert int(tokens.num_tokens[0]) == 128 // TINY.window * TINY.tokens_per_window


def test_encode_spans_padding_and_batching(trained):
    model, text = trained
    seqs = [text[:70], text[5:128], "ACGTN" * 3]  # lengths not multiples of the window or the chunk
    tokens = model.encode(seqs)
    assert tokens.num_bases.tolist() == [70, 123, 15]
    for i in range(3):
        spans = tokens.spans[i, : int(tokens.num_tokens[i])]
        assert spans[0, 0] == 0 and (spans[1:, 0] == spans[:-1, 1]).all() and spans[-1, 1] == len(seqs[i])
        assert ((spans[:, 0] // TINY.window) == ((spans[:, 1] - 1) // TINY.window)).all()
    one = [model.encode(s) for s in seqs]  # batched == one by one
    for i, t in enumerate(one):
        assert torch.equal(t.ids[0, : int(t.num_tokens[0])], tokens.ids[i, : int(tokens.num_tokens[i])])
    assert [len(d) for d in model.decode(tokens)] == [70, 123, 15]


def test_bad_input_is_rejected(trained):
    model, _ = trained
    with pytest.raises(ValueError, match="'Z' at position 3"):
        model.encode("ACZT")
    with pytest.raises(ValueError, match="out of range"):
        model.decode(torch.tensor([[model.vocab_size]]))
    with pytest.raises(ValueError, match="multiple of window"):
        model(torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="integer base codes"):
        model(torch.zeros(1, 64))
    with pytest.raises(ValueError, match="no quantizer"):
        MergeDNA(replace(TINY, quantizer=None)).encode("ACGT")


def test_save_load_round_trip(trained, tmp_path):
    model, text = trained
    model.save_pretrained(tmp_path / "m")
    again = gentok.load(tmp_path / "m")
    assert isinstance(again, MergeDNA)
    a, b = model.encode(text), again.encode(text)
    assert torch.equal(a.ids, b.ids)
    assert model.decode(a) == again.decode(b)


def test_cli_round_trip_keeps_headers_case_and_n(trained, tmp_path):
    model, text = trained
    model.save_pretrained(tmp_path / "m")
    seq2 = text[:40].lower() + "NNNNN" + text[45:100]
    fasta = f">rec one\n{text[:60]}\n{text[60:]}\n>rec2 soft-masked\n{seq2}\n"
    (tmp_path / "a.fa").write_text(fasta)
    (tmp_path / "b.fa").write_text(">solo\nACGTACGTAC\n")
    assert cli(["encode", "--model", str(tmp_path / "m"), str(tmp_path / "a.fa"), str(tmp_path / "b.fa"),
                "--out", str(tmp_path / "t.safetensors")]) == 0
    assert cli(["decode", "--model", str(tmp_path / "m"), str(tmp_path / "t.safetensors"),
                "--out", str(tmp_path / "out")]) == 0
    orig, back = read_fasta(tmp_path / "a.fa"), read_fasta(tmp_path / "out" / "a.fa")
    assert [r.name for r in back] == ["rec one", "rec2 soft-masked"]
    for o, r in zip(orig, back):
        assert len(o) == len(r)
        assert (o.lower == r.lower).all() and ((o.codes == N) == (r.codes == N)).all()
        assert np.mean(o.codes == r.codes) > 0.85  # the bases themselves come from the (overfit) model
    assert len(read_fasta(tmp_path / "out" / "b.fa")[0]) == 10


def test_decode_accepts_generated_ids(trained):
    model, _ = trained
    ids = torch.randint(0, model.vocab_size, (2, 30))  # any id sequence decodes: lengths come from the ids
    tokens = DNATokens(ids, torch.tensor([30, 12]), TINY.window)
    out = model.decode(tokens)
    assert [len(s) for s in out] == tokens.num_bases.tolist()
