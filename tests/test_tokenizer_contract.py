"""The one tokenizer contract, run over every registered tokenizer type (as tests/test_quantizers.py runs over
every quantizer): eval determinism, a ragged/padded batch equals its items one by one, save/load identity, the CLI
encode -> decode round trip, ids inside the vocabulary, and bad input raising a `ValueError` that names the problem.

A new tokenizer family registers its type (pyproject.toml entry point) and adds one `Case` to `CASES`; the test
`test_every_registered_tokenizer_has_a_case` fails until it does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

import gentok
from gentok.checkpoint import CheckpointError, registered_models
from gentok.cli import main as cli
from gentok.quantizers import BinaryConfig, FSQConfig, ResidualVQConfig, VQConfig
from gentok.tokenizers import Tokenizer
from gentok.tokenizers.tokens import Tokens
from gentok.validate import PAD_ID

torch.set_num_threads(1)
SR = 16000
IMG = dict(image_size=16, patch_size=8, num_tokens=4, width=16, enc_depth=1, dec_depth=1, heads=2)


@dataclass
class Case:
    build: Callable[[], Tokenizer]  # a tiny instance, in eval mode
    batch: Callable[[], object]  # a batch `encode` takes (ragged where the family allows it)
    items: Callable[[object], list]  # the same batch as single-item inputs
    files: Callable[[Path], list[Path]]  # asset files for the CLI
    bad_inputs: list  # (input, words the error must contain)
    decode_options: dict | None = None


# -- images -------------------------------------------------------------------------------------------------------
def _images():
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _image_files(tmp: Path) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        p = tmp / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


_BAD_IMAGES = [
    (torch.rand(2, 3, 8, 8), "shape"),
    ((torch.rand(2, 3, 16, 16) * 255).to(torch.uint8), "dtype"),
    (torch.rand(2, 3, 16, 16) * 3, "[0, 1]"),
    (torch.full((2, 3, 16, 16), float("nan")), "NaN"),
    (torch.rand(0, 3, 16, 16), "at least one"),
    ([], "at least one"),
]


def _image_case(make):
    return Case(make, _images, lambda x: [x[i:i + 1] for i in range(len(x))], _image_files, _BAD_IMAGES)


def _titok():
    from gentok.tokenizers.image.titok import TiTok, TiTokConfig

    return TiTok(TiTokConfig(**IMG, quantizer=VQConfig(dim=4, codebook_size=16, cosine=False)))


def _maskgit_vqgan():
    from gentok.tokenizers.image.vqgan import MaskGitVQGAN, VQGANConfig

    torch.manual_seed(0)
    return MaskGitVQGAN(VQGANConfig(channels=(32, 32), num_res_blocks=1, z_channels=8, codebook_size=16,
                                    image_size=16)).eval()


def _titok_fsq():
    from gentok.tokenizers.image.titok import TiTok, TiTokConfig

    return TiTok(TiTokConfig(**IMG, quantizer=FSQConfig(dim=3, levels=(5, 4, 3)), token_mixing=True))


def _titok_colour():
    from gentok.tokenizers.image.titok import TiTok, TiTokConfig

    return TiTok(TiTokConfig(**IMG, quantizer=VQConfig(dim=4, codebook_size=64, cosine=False), colour_tokens=1))


def _binary():
    from gentok.tokenizers.image.binary import BinaryTokenizer, BinaryTokenizerConfig

    return BinaryTokenizer(BinaryTokenizerConfig(**IMG, quantizer=BinaryConfig(dim=6, bits=6)))


def _flextok():
    from gentok.tokenizers.image.flextok import FlexTok, FlexTokConfig

    return FlexTok(FlexTokConfig(**IMG, quantizer=FSQConfig(dim=3, levels=(5, 4, 3)), token_mixing=True,
                                 sample_steps=2))


def _official_flextok():
    # the official FlexTok fixture snapshot (random weights in the hub layout), converted on load
    return gentok.load(Path(__file__).parent / "fixtures" / "official" / "flextok_tiny" / "snapshot")


# -- audio --------------------------------------------------------------------------------------------------------
def _wavs():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(n, generator=g) * 0.1 for n in (900, 1600, 1280)]


def _audio_files(tmp: Path) -> list[Path]:
    from gentok.tokenizers.audio.assets import write_audio

    return [write_audio(tmp / f"clip{i}.wav", w, SR) for i, w in enumerate(_wavs())]


_BAD_AUDIO = [
    (torch.full((2, 800), float("nan")), "NaN"),
    ([], "at least one"),
    (torch.zeros(2, 3, 800), "shape"),
    (torch.zeros(2, 800, dtype=torch.long), "float"),
]


def _audio_case(make):
    return Case(make, _wavs, lambda x: [[w] for w in x], _audio_files, _BAD_AUDIO)


def _codec():
    from gentok.tokenizers.audio.codec import AudioCodec, CodecConfig

    return AudioCodec(CodecConfig(sample_rate=SR, channels=4, ratios=(4, 5), dim=8, dilations=(1,),
                                  quantizer=ResidualVQConfig(dim=8, num_quantizers=3, codebook_size=16),
                                  mel_windows=(64, 128)))


def _hf(name):
    def make():
        from test_audio_hf import _configs

        cls, cfg = _configs()[name]
        return cls.from_hf_config(cfg)

    return make


# -- DNA ----------------------------------------------------------------------------------------------------------
def _dna():
    rng = np.random.default_rng(0)
    return ["".join(rng.choice(list("ACGT"), n)) for n in (70, 9, 33)]


def _fasta_files(tmp: Path) -> list[Path]:
    from gentok.tokenizers.dna.fasta import write_fasta

    seqs = _dna()
    return [write_fasta(tmp / "a.fna", [("chr1 test", seqs[0]), ("chr2", seqs[1])]),
            write_fasta(tmp / "b.fna", [("plasmid", seqs[2])])]


def _mergedna():
    from gentok.tokenizers.dna.mergedna import MergeDNA, MergeDNAConfig

    return MergeDNA(MergeDNAConfig(seq_len=32, window=4, dim=16, heads=2, local_depth=1, latent_depth=1,
                                   latent_dec_depth=1, local_dec_depth=1, tokens_per_window=2, train_tokens=(2, 4)))


CASES = {
    "titok": _image_case(_titok),
    "titok-fsq": _image_case(_titok_fsq),
    "titok-colour": _image_case(_titok_colour),
    "binary_tokenizer": _image_case(_binary),
    "flextok": _image_case(_flextok),
    "flextok.official": _image_case(_official_flextok),
    "maskgit_vqgan": _image_case(_maskgit_vqgan),
    "audio_codec": _audio_case(_codec),
    "audio.encodec": _audio_case(_hf("encodec")),
    "audio.dac": _audio_case(_hf("dac")),
    "audio.mimi": _audio_case(_hf("mimi")),
    "mergedna": Case(_mergedna, _dna, lambda x: [[s] for s in x], _fasta_files,
                     [("ACGTXQ", "character"), ("", "empty"), ([], "at least one"), (3.5, "expected")]),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    c = CASES[request.param]
    torch.manual_seed(0)
    tok = c.build().eval()
    return request.param, c, tok


def _decoded_equal(a, b):
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    return a == b


def _item_decoded(x, i, n=None):
    """Item i of a decoded batch (cut to n samples where the family pads)."""
    if isinstance(x, torch.Tensor):
        return x[i] if n is None else x[i, :n]
    return x[i]


def _check_tokens(tok, tokens: Tokens):
    assert isinstance(tokens, Tokens) and tokens.ids.dtype == torch.long
    real = tokens.ids[tokens.mask]
    assert real.numel() and int(real.min()) >= 0 and int(real.max()) < tok.vocab_size
    assert bool((tokens.ids[~tokens.mask] == PAD_ID).all())
    expected_ndim = 2 if tok.num_codebooks == 1 else 3
    assert tokens.ids.ndim == expected_ndim
    assert tokens.bits_per_token == pytest.approx(tok.bits_per_token)
    if tok.tokens_per_item is not None:
        assert bool((tokens.lengths == tok.tokens_per_item).all())


def test_every_registered_tokenizer_has_a_case(monkeypatch):
    from checkout_entry_points import use_checkout_entry_points

    use_checkout_entry_points(monkeypatch)  # the types this checkout declares (tests/checkout_entry_points.py)
    types = {name for name, cls in registered_models().items() if issubclass(cls, Tokenizer)}
    assert {"flextok.official", "audio.encodec"} <= types
    covered = {name.split("-")[0] for name in CASES}
    assert types <= covered, f"tokenizer types without a contract case: {sorted(types - covered)}"


def test_encode_is_deterministic_and_in_vocab(case):
    _, c, tok = case
    x = c.batch()
    a, b = tok.encode(x), tok.encode(x)
    _check_tokens(tok, a)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.lengths, b.lengths)
    opts = c.decode_options or {}
    assert _decoded_equal(tok.decode(a, **opts), tok.decode(a, **opts))


def test_batch_equals_items_one_by_one(case):
    _, c, tok = case
    x = c.batch()
    tokens = tok.encode(x)
    decoded = tok.decode(tokens)
    for i, item in enumerate(c.items(x)):
        alone = tok.encode(item)
        assert torch.equal(alone.item(0), tokens.item(i)), f"item {i}"
        one = tok.decode(alone)
        n = one.shape[-1] if isinstance(one, torch.Tensor) and one.ndim == 2 else None
        assert _decoded_equal(_item_decoded(one, 0), _item_decoded(decoded, i, n)), f"item {i}"


def test_decode_takes_tokens_and_bare_ids(case):
    _, c, tok = case
    tokens = tok.encode(c.batch())
    assert _decoded_equal(tok.decode(tokens), tok.decode(tokens.ids))


def test_save_load_identity(case, tmp_path):
    _, c, tok = case
    tok.save_pretrained(tmp_path / "m")
    loaded = gentok.load(tmp_path / "m")
    assert type(loaded) is type(tok)
    x = c.batch()
    assert torch.equal(loaded.encode(x).ids, tok.encode(x).ids)


def test_cli_round_trip(case, tmp_path, capsys):
    name, c, tok = case
    tok.save_pretrained(tmp_path / "m")
    files = c.files(tmp_path)
    out = tmp_path / "tokens.safetensors"
    assert cli(["encode", "--model", str(tmp_path / "m"), *map(str, files), "--out", str(out),
                "--batch-size", "2"]) == 0
    printed = capsys.readouterr().out
    assert "bits per token" in printed and "bits per file" in printed  # every figure named by its unit
    unit = {"audio": "bits per second of audio", "mergedna": "bits per base"}
    for prefix, words in unit.items():
        if name.startswith(prefix):
            assert words in printed, printed
    tokens, header = Tokens.load_with_header(out)
    assert header["names"] == [f.name for f in files] and header["model_type"] == tok.model_type
    _check_tokens(tok, tokens)
    direct = tok.encode_files(files)
    assert len(tokens) == len(direct)
    for i in range(len(direct)):
        assert torch.equal(tokens.item(i), direct.item(i))
    assert cli(["decode", "--model", str(tmp_path / "m"), str(out), "--out", str(tmp_path / "dec")]) == 0
    written = sorted(p.name for p in (tmp_path / "dec").iterdir())
    assert len(written) == len(files)
    # the files decode back and re-encode through the same path
    again = tok.encode_files(sorted((tmp_path / "dec").iterdir()))
    _check_tokens(tok, again)


def test_bad_input_raises_value_error(case):
    _, c, tok = case
    for bad, words in c.bad_inputs:
        with pytest.raises(ValueError) as err:
            tok.encode(bad)
        assert words.lower() in str(err.value).lower(), (bad if not isinstance(bad, torch.Tensor) else bad.shape, err.value)


def test_bad_ids_raise_value_error(case):
    _, c, tok = case
    tokens = tok.encode(c.batch())
    ids = tokens.ids
    too_big = ids.clone()
    too_big[0, 0] = tok.vocab_size
    negative = ids.clone()
    negative[0, 0] = -5
    for bad, words in [(too_big, "must lie in"), (negative, "must lie in"), (ids.float(), "integer"),
                       (ids[0], "shape"), (ids[:0], "empty"), ("ids", "tensor")]:
        with pytest.raises(ValueError) as err:
            tok.decode(bad)
        assert words in str(err.value), err.value


def test_checkpoint_of_another_type_is_refused(case, tmp_path):
    name, _, tok = case
    other = _titok() if not name.startswith("titok") else _mergedna()
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(CheckpointError) as err:
        type(tok).from_pretrained(tmp_path / "other")
    assert other.model_type in str(err.value)
    assert isinstance(err.value, ValueError)


def test_capabilities_are_declared_not_probed(case):
    """Every tokenizer answers the optional capabilities of the base class; one without bits says so clearly."""
    _, c, tok = case
    assert isinstance(tok.decodes_prefixes, bool) and isinstance(tok.has_bits, bool)
    assert isinstance(tok.default_decode_options, dict)
    tokens = tok.encode(c.batch())
    if tok.has_bits:
        bits = tok.to_bits(tokens)
        assert bits.shape[:2] == tokens.ids.shape[:2] and set(bits.unique().tolist()) <= {0, 1}
    else:
        with pytest.raises(NotImplementedError, match="has_bits"):
            tok.to_bits(tokens)
    if tok.decodes_prefixes:  # the first token alone decodes
        assert tok.decode(tokens.ids[:, :1], **tok.default_decode_options).shape[0] == len(tokens)
    summary = tok.bits_summary(tokens)
    assert summary.startswith(f"{tokens.bits_per_token:g} bits per token, ")


def test_bits_are_named_by_unit(case):
    _, c, tok = case
    tokens = tok.encode(c.batch())
    assert tok.bits_per_token == pytest.approx(tok.num_codebooks * math.log2(tok.vocab_size))
    assert torch.allclose(tokens.bits_per_item, tokens.lengths.double() * tokens.bits_per_token)
    assert not hasattr(tok, "bits_per_sample")
