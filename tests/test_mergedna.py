"""MergeDNA model: merging inside the model, the three training terms, overfitting, save/load, API and CLI."""

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gentok.losses.dna import base_targets
from safetensors.torch import load_file

import gentok
from gentok.cli import main as cli
from gentok.config import replace
from gentok.tokenizers.dna import PRESETS, MergeDNA, MergeDNAConfig, read_fasta
from gentok.tokenizers.dna.fasta import PAD, N, codes_to_text
from gentok.tokenizers.dna.tokens import base_lengths, from_counts, base_spans, bits_per_base, num_bases
from gentok.tokenizers.tokens import Tokens
from gentok.validate import PAD_ID

LEGACY = Path(__file__).parent / "fixtures" / "legacy"

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
    tokens, lengths, source = model._local_encode(bases, t, with_source=True)
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
    assert isinstance(tokens, Tokens) and tokens.meta["window"] == TINY.window
    decoded = model.decode(tokens)[0]
    acc = np.mean(np.frombuffer(decoded.encode(), np.uint8) == np.frombuffer(text.encode(), np.uint8))
    assert acc > 0.9, acc
    assert tokens.lengths.tolist() == [128 // TINY.window * TINY.tokens_per_window]


def test_encode_spans_padding_and_batching(trained):
    model, text = trained
    seqs = [text[:70], text[5:128], "ACGTN" * 3]  # lengths not multiples of the window or the chunk
    tokens = model.encode(seqs)
    assert num_bases(tokens).tolist() == [70, 123, 15]
    assert (tokens.ids[~tokens.mask] == PAD_ID).all() and (tokens.ids[tokens.mask] >= 0).all()
    spans, lengths = base_spans(tokens), base_lengths(tokens)
    for i in range(3):
        s = spans[i, : int(tokens.lengths[i])]
        assert s[0, 0] == 0 and (s[1:, 0] == s[:-1, 1]).all() and s[-1, 1] == len(seqs[i])
        assert ((s[:, 0] // TINY.window) == ((s[:, 1] - 1) // TINY.window)).all()
        assert (spans[i, int(tokens.lengths[i]):] == -1).all() and (lengths[i, int(tokens.lengths[i]):] == 0).all()
    assert [len(d) for d in model.decode(tokens)] == [70, 123, 15]


@pytest.mark.parametrize("batch_size", [1, 64])
def test_ragged_batch_equals_each_sequence_alone(trained, batch_size):
    model, text = trained
    seqs = [text[:70], text[5:128] * 2, "ACGTN" * 3, text[:9]]  # 1 to 4 chunks of seq_len 64, ragged tails
    tokens = model.encode(seqs, batch_size=batch_size)
    decoded = model.decode(tokens, batch_size=batch_size)
    for i, s in enumerate(seqs):
        alone = model.encode(s)
        assert torch.equal(alone.ids[0], tokens.item(i)) and int(alone.lengths[0]) == int(tokens.lengths[i])
        assert model.decode(alone) == [decoded[i]]
    assert torch.equal(tokens.ids, model.encode(seqs, batch_size=3).ids)  # chunk batching changes nothing


def test_decode_accepts_tokens_and_bare_ids(trained):
    model, text = trained
    tokens = model.encode([text[:70], text[:20]])
    assert model.decode(tokens.ids) == model.decode(tokens)  # -1 padding marks the lengths
    # any id sequence decodes: lengths live in the ids
    ids = torch.randint(0, model.vocab_size, (2, 30), generator=torch.Generator().manual_seed(0))
    ids[1, 12:] = PAD_ID
    out = model.decode(ids)
    assert [len(s) for s in out] == num_bases(ids, TINY.window).tolist() and set("".join(out)) <= set("ACGT")
    assert model.decode(Tokens(ids, torch.tensor([30, 12]), {"window": TINY.window})) == out


def test_old_zero_padded_layout_converts_through_from_counts(trained):
    """`DNATokens` and `decode(num_tokens=)` were removed (CHANGELOG); `from_counts` turns the pre-0.2 layout (zeros
    past each row's count) into `Tokens`, which decode like the same ids padded with PAD_ID."""
    model, _ = trained
    ids = torch.randint(0, model.vocab_size, (2, 30), generator=torch.Generator().manual_seed(1))
    padded = ids.clone()
    padded[1, 12:] = PAD_ID
    ids[1, 12:] = 0  # the old layout: zeros past num_tokens
    old = from_counts(ids, torch.tensor([30, 12]), TINY.window)
    assert isinstance(old, Tokens) and (old.ids[1, 12:] == PAD_ID).all()
    assert model.decode(old) == model.decode(padded)
    with pytest.raises(TypeError):
        model.decode(ids, num_tokens=torch.tensor([30, 12]))
    assert not hasattr(model, "bits_per_sample")


def test_bits_are_per_token_and_per_base(trained):
    model, text = trained
    assert model.bits_per_token == pytest.approx(math.log2(model.vocab_size))
    tokens = model.encode([text, text[:64]], tokens_per_window=2)  # whole windows: t tokens per window exactly
    assert tokens.bits_per_token == pytest.approx(model.bits_per_token)
    expected = model.bits_per_token * 2 / TINY.window
    assert bits_per_base(tokens).tolist() == pytest.approx([expected, expected])


def test_bad_input_is_rejected(trained):
    model, text = trained
    with pytest.raises(ValueError, match="'Z' at position 3"):
        model.encode("ACZT")
    with pytest.raises(ValueError, match="'U' at position 1"):
        model.encode(["ACGT", "UUAC"])
    for empty in ("", "   ", []):
        with pytest.raises(ValueError, match="empty sequence|at least one sequence"):
            model.encode(empty)
    with pytest.raises(ValueError, match="tokens_per_window"):
        model.encode("ACGT", tokens_per_window=TINY.window + 1)
    with pytest.raises(ValueError, match="batch_size"):
        model.encode("ACGT", batch_size=0)
    with pytest.raises(ValueError, match=rf"must lie in \[0, {model.vocab_size}\)"):
        model.decode(torch.tensor([[model.vocab_size]]))
    with pytest.raises(ValueError, match="must lie in"):
        model.decode(torch.tensor([[3, -2]]))
    with pytest.raises(ValueError, match="integer ids"):
        model.decode(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="integer ids"):
        model.decode(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="shape"):
        model.decode(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="non-empty"):
        model.decode(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="padding"):
        model.decode(torch.tensor([[PAD_ID, 3]]))
    with pytest.raises(ValueError, match="window 16"):
        model.decode(Tokens(torch.tensor([[3]]), meta={"window": 16}))
    with pytest.raises(ValueError, match="multiple of window"):
        model(torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="integer base codes"):
        model(torch.zeros(1, 64))
    with pytest.raises(ValueError, match="no quantizer"):
        MergeDNA(replace(TINY, quantizer=None)).encode("ACGT")
    # a missing file named as a str says so (it used to be read as a sequence: "invalid DNA character '/'")
    for missing in ("/path/missing.fa", "data/chr1.fasta", "genome.fna.gz", "reads.FA"):
        with pytest.raises(ValueError, match=f"^FASTA file {missing} does not exist$"):
            model.encode(missing)


def test_save_load_round_trip(trained, tmp_path):
    model, text = trained
    model.save_pretrained(tmp_path / "m")
    again = gentok.load(tmp_path / "m")
    assert isinstance(again, MergeDNA)
    a, b = model.encode(text), again.encode(text)
    assert torch.equal(a.ids, b.ids)
    assert model.decode(a) == again.decode(b)


def test_legacy_checkpoint_gives_the_same_ids():
    """A model directory saved before the one-contract redesign loads and encodes to the ids it gave then."""
    model = gentok.load(LEGACY / "mergedna")
    assert isinstance(model, MergeDNA)
    seqs = json.loads((LEGACY / "dna.json").read_text())
    expected = load_file(LEGACY / "expected.safetensors")
    counts = expected["mergedna.num_tokens"]
    tokens = model.encode(seqs)
    assert tokens.lengths.tolist() == counts.tolist()
    for i, n in enumerate(counts.tolist()):
        assert torch.equal(tokens.item(i), expected["mergedna"][i, :n])
    assert (tokens.ids[~tokens.mask] == PAD_ID).all()
    assert num_bases(tokens).tolist() == [len(s) for s in seqs]


def test_cli_round_trip_keeps_headers_case_and_n(trained, tmp_path):
    model, text = trained
    model.save_pretrained(tmp_path / "m")
    seq2 = text[:40].lower() + "NNNNN" + text[45:100]
    fasta = f">rec one\n{text[:60]}\n{text[60:]}\n>rec2 soft-masked\n{seq2}\n"
    (tmp_path / "a.fa").write_text(fasta)
    (tmp_path / "b.fa").write_text(">solo\nACGTACGTAC\n")
    (tmp_path / "c.fna.gz").write_bytes(gzip.compress(b">gz \xc3\xa9 record\nnnACGTacgtNN\n>two\nGGCC\n"))
    inputs = [str(tmp_path / n) for n in ("a.fa", "b.fa", "c.fna.gz")]
    # --batch-size 1: every file is its own batch, so the CLI zero-pads the record tables when it joins them
    assert cli(["encode", "--model", str(tmp_path / "m"), *inputs, "--out", str(tmp_path / "t.safetensors"),
                "--batch-size", "1"]) == 0
    tokens = Tokens.load(tmp_path / "t.safetensors")
    assert len(tokens) == 3 and tokens.meta["window"] == TINY.window
    assert cli(["decode", "--model", str(tmp_path / "m"), str(tmp_path / "t.safetensors"),
                "--out", str(tmp_path / "out"), "--batch-size", "2"]) == 0
    orig, back = read_fasta(tmp_path / "a.fa"), read_fasta(tmp_path / "out" / "a.fa")
    assert [r.name for r in back] == ["rec one", "rec2 soft-masked"]
    for o, r in zip(orig, back):
        assert len(o) == len(r)
        assert (o.lower == r.lower).all() and ((o.codes == N) == (r.codes == N)).all()
        assert np.mean(o.codes == r.codes) > 0.85  # the bases themselves come from the (overfit) model
    assert len(read_fasta(tmp_path / "out" / "b.fa")[0]) == 10
    # a gzipped input comes back gzipped under its own name, headers, case and N runs intact
    gz = tmp_path / "out" / "c.fna.gz"
    assert gz.read_bytes()[:2] == b"\x1f\x8b" and not (tmp_path / "out" / "c.fna").exists()
    recs = read_fasta(gz)
    assert [r.name for r in recs] == ["gz \u00e9 record", "two"] and [len(r) for r in recs] == [12, 4]
    assert recs[0].lower.tolist() == [True] * 2 + [False] * 4 + [True] * 4 + [False] * 2
    assert ((recs[0].codes == N).tolist() == [True] * 2 + [False] * 8 + [True] * 2)


def test_decode_to_files_rejects_foreign_tokens(trained, tmp_path):
    model, text = trained
    with pytest.raises(ValueError, match="encode_files"):
        model.decode_to_files(model.encode(text), tmp_path, ["x.fa"])


def test_dna_modules_import_no_cycle():
    """The DNA modules form a DAG (the FASTA edge and the tokens helpers never import the model)."""
    import ast

    root = Path(gentok.__file__).parent / "tokenizers" / "dna"
    graph = {}
    for path in root.glob("*.py"):
        if path.stem == "__init__":
            continue
        tree = ast.parse(path.read_text())
        found = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        graph[path.stem] = {m.rsplit(".", 1)[1] for m in found if m.startswith("gentok.tokenizers.dna.")}
    assert "mergedna" not in graph["assets"] | graph["tokens"]
    done, visiting = set(), set()

    def visit(node):
        assert node not in visiting, f"import cycle through dna/{node}.py"
        if node not in done:
            visiting.add(node)
            for dep in graph.get(node, ()):
                visit(dep)
            visiting.discard(node)
            done.add(node)

    for node in graph:
        visit(node)


MERGE_FIXTURE = Path(__file__).parent / "fixtures" / "dna_merge_ids.safetensors"


def _fixture_models():
    """The random-weight MergeDNA models (configs + weights) and sequences the merge fixture was made with."""
    from safetensors import safe_open

    from gentok.config import from_dict

    with safe_open(MERGE_FIXTURE, "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    models = {}
    for name in ("a", "b"):
        model = MergeDNA(from_dict(json.loads(meta[f"{name}.config"]), MergeDNAConfig)).eval()
        prefix = f"{name}.weights."
        model.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        models[name] = model
    return models, json.loads(meta["sequences"]), tensors


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_encode_gives_the_ids_saved_before_vectorising(batch_size):
    """Ids of the window-and-batch vectorised encode equal those the per-chunk implementation gave (saved in
    tests/fixtures/dna_merge_ids.safetensors before the change) for every tokens_per_window of two models, on ragged
    sequences with N runs and repeats (equal merge keys, so tie-breaking is covered too)."""
    models, seqs, expected = _fixture_models()
    checked = 0
    for name, model in models.items():
        for key in sorted(k for k in expected if k.startswith(f"{name}.t") and k.endswith(".ids")):
            t = int(key.split(".")[1][1:])
            tokens = model.encode(seqs, tokens_per_window=t, batch_size=batch_size)
            assert torch.equal(tokens.lengths, expected[key.replace(".ids", ".lengths")]), key
            assert torch.equal(tokens.ids, expected[key]), key
            checked += 1
    assert checked == 7 + 15  # window 8 with 2 merge layers: t in 2..8; window 16 with 3 layers: t in 2..16


def test_source_free_local_encode_equals_the_source_matrix_path():
    """Merging real-base counts instead of the 0/1 source matrix gives the same tokens and lengths, with padding."""
    torch.manual_seed(0)
    model = MergeDNA(TINY).eval()
    bases = torch.randint(0, 5, (3, 64))
    bases[1, 37:] = PAD
    for t in (2, 3, 5, 8):
        a = model._local_encode(bases, t, with_source=True)
        b = model._local_encode(bases, t)
        assert b[2] is None and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert torch.equal(a[1], (a[2] @ (bases != PAD).float().view(-1, TINY.window, 1)).squeeze(-1).round().long()
                           .view(3, -1))
