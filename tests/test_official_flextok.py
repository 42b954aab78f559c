"""Official FlexTok checkpoints (apple/ml-flextok) through gentok, against outputs of the official code.

The fixture (tests/fixtures/official/flextok_tiny/, written by tools/make_flextok_fixtures.py) is a random-weight
FlexTok in the hub layout plus the official code's outputs; nothing here imports the official code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import gentok
from gentok.checkpoint import CheckpointError
from gentok.pretrained.flextok_model import OfficialFlexTok
from gentok.tokenizers.image.flextok import FlexTok
from gentok.tokenizers.tokens import Tokens
from gentok.validate import PAD_ID

FIXTURE = Path(__file__).parent / "fixtures" / "official" / "flextok_tiny"
SNAPSHOT = FIXTURE / "snapshot"
# config.json of this snapshot converted and saved by gentok before OfficialFlexTok existed (type "flextok" with an
# `official` field), and the weight names it saved beside it
LEGACY = Path(__file__).parent / "fixtures" / "legacy" / "flextok_official"


@pytest.fixture(scope="module")
def model() -> OfficialFlexTok:
    return gentok.load(SNAPSHOT)


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "reference.safetensors"))


def test_converts_to_an_official_flextok_tokenizer(model):
    assert isinstance(model, OfficialFlexTok) and not isinstance(model, FlexTok)
    assert model.tokens_per_item == 8 and model.vocab_size == 64000
    assert model.decodes_prefixes and model.default_decode_options == {"steps": 25, "guidance": 1.0}
    assert not model.has_bits


def test_fsq_is_gentoks_and_matches_the_official_ids_to_codes(model, ref):
    """The quantizer is gentok's FSQ; its codes of the official ids lie on the official grid
    ((id // basis) % levels - levels // 2) / (levels // 2) (its encode is checked against the official ids above)."""
    from gentok.quantizers import FSQ

    assert isinstance(model.quantizer, FSQ)
    levels = torch.tensor(model.config.levels)
    basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), levels[:-1]]), 0)
    ids = ref["tokens"]
    grid = ((ids[..., None] // basis) % levels - levels // 2) / (levels // 2)
    codes = model.quantizer.decode(ids)
    assert torch.equal(codes, grid.float())


def test_token_ids_are_identical_to_the_official_code(model, ref):
    tokens = model.encode((ref["images"] + 1) / 2)  # gentok images are in [0, 1], theirs in [-1, 1]
    assert torch.equal(tokens.ids, ref["tokens"])
    # batched == one by one
    one = torch.cat([model.encode((ref["images"][i:i + 1] + 1) / 2).ids for i in range(3)])
    assert torch.equal(one, ref["tokens"])


def test_one_decoder_forward_matches_at_fixed_time_and_noise(model, ref):
    net = model.net
    with torch.no_grad():
        registers = model.registers_for(ref["tokens"], ref["dec_keep_k"])  # prefixes of 8, 3 and 1 tokens
        v = net.velocity(ref["dec_noise"], ref["dec_t"], registers)
        v_null = net.velocity(ref["dec_noise"], ref["dec_t"], net.null_registers(registers))
    assert (v - ref["dec_velocity"]).abs().max() < 1e-4
    assert (v_null - ref["dec_velocity_uncond"]).abs().max() < 1e-4
    # the dropped tokens never reach the decoder: ids past each prefix do not matter
    scrambled = ref["tokens"].clone()
    for i, k in enumerate(ref["dec_keep_k"].tolist()):
        scrambled[i, k:] = torch.randint(0, 64000, (8 - k,))
    with torch.no_grad():
        again = net.velocity(ref["dec_noise"], ref["dec_t"], model.registers_for(scrambled, ref["dec_keep_k"]))
    assert torch.equal(again, v)


@pytest.mark.parametrize("name, guidance, apg", [("plain", 1.0, False), ("cfg", 2.5, False), ("apg", 2.5, True)])
def test_whole_decode_of_a_prefix_matches_the_official_detokenize(model, ref, name, guidance, apg):
    steps, seed = int(ref["detok_steps"]), int(ref["detok_seed"])
    img = model.decode(ref["detok_ids"], steps=steps, guidance=guidance, norm_guidance=apg,
                       generator=torch.Generator().manual_seed(seed))
    expected = ((ref[f"detok_{name}"] + 1) / 2).clamp(0, 1)
    assert img.shape == (1, 3, 16, 16)
    assert (img - expected).abs().max() < 1e-4


def test_prefix_decoding_through_tokens_and_padding(model, ref):
    ids = ref["tokens"][:2].clone()
    ids[1, 3:] = PAD_ID  # the second item keeps 3 tokens
    padded = model.decode(ids, steps=2, seed=3)
    alone = model.decode(ref["tokens"][1:2, :3], steps=2, seed=3)
    assert torch.allclose(padded[1:], alone, atol=1e-5)  # batched == one by one, padding changes nothing
    t = Tokens(ids, torch.tensor([8, 3]))
    assert torch.allclose(model.decode(t, steps=2, seed=3), padded)
    with pytest.raises(ValueError):
        model.decode(torch.full((1, 9), 5), steps=2)  # longer than K
    with pytest.raises(ValueError):
        model.decode(torch.tensor([[64000]]), steps=2)  # outside the vocabulary


def test_save_pretrained_into_gentok_format_reloads_with_same_ids(model, ref, tmp_path):
    model.save_pretrained(tmp_path / "ours")
    meta = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert meta["type"] == "flextok.official"
    again = gentok.load(tmp_path / "ours")
    assert isinstance(again, OfficialFlexTok)
    images = (ref["images"] + 1) / 2
    assert torch.equal(again.encode(images).ids, ref["tokens"])
    assert torch.equal(again.decode(ref["tokens"][:1, :4], steps=2, seed=1),
                       model.decode(ref["tokens"][:1, :4], steps=2, seed=1))


def test_directory_saved_before_the_official_class_loads_with_the_same_ids(model, ref, tmp_path):
    """A converted model saved by an older gentok (type "flextok", a FlexTokConfig with `official`) still loads,
    through `gentok.load` and `FlexTok.from_pretrained`, as OfficialFlexTok with the same weights and ids."""
    model.save_pretrained(tmp_path / "old")
    saved = load_file(str(tmp_path / "old" / "model.safetensors"))
    assert sorted(saved) == json.loads((LEGACY / "weight_names.json").read_text())  # same weight names as then
    shutil.copy(LEGACY / "config.json", tmp_path / "old" / "config.json")
    for again in (gentok.load(tmp_path / "old"), FlexTok.from_pretrained(tmp_path / "old")):
        assert isinstance(again, OfficialFlexTok)
        assert again.config.sample_steps == 25 and again.config.guidance == 1.0
        assert torch.equal(again.encode((ref["images"] + 1) / 2).ids, ref["tokens"])
        assert torch.equal(again.decode(ref["tokens"][:1, :4], steps=2, seed=1),
                           model.decode(ref["tokens"][:1, :4], steps=2, seed=1))


def test_token_file_of_an_old_official_directory_decodes_with_the_reloaded_model(model, ref, tmp_path, capsys):
    """`gentok encode` with an old official directory wrote model_type "flextok"; the directory now reloads as
    "flextok.official", and `gentok decode` takes that pairing (and still refuses a foreign type)."""
    from gentok.cli import main as cli

    model.save_pretrained(tmp_path / "old")
    shutil.copy(LEGACY / "config.json", tmp_path / "old" / "config.json")
    Tokens(ref["tokens"][:1, :4]).save(tmp_path / "t.safetensors", {"model_type": "flextok", "names": ["a.png"]})
    args = ["decode", "--model", str(tmp_path / "old"), str(tmp_path / "t.safetensors"), "--option", "steps=2"]
    assert cli(args + ["--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "a.png").is_file()
    Tokens(ref["tokens"][:1, :4]).save(tmp_path / "u.safetensors", {"model_type": "titok", "names": ["a.png"]})
    args[3] = str(tmp_path / "u.safetensors")
    assert cli(args + ["--out", str(tmp_path / "out2")]) == 2
    assert "was encoded by a 'titok' model, not 'flextok.official'" in capsys.readouterr().err


def _copy_snapshot(tmp_path: Path, edit) -> Path:
    out = tmp_path / "snap"
    shutil.copytree(SNAPSHOT, out)
    state = load_file(str(out / "model.safetensors"))
    edit(state)
    save_file(state, str(out / "model.safetensors"))
    return out


def test_mismatching_keys_raise_listing_missing_and_unexpected(tmp_path):
    def edit(state):
        key = "decoder.module_dict.dec_nested_dropout.dropout_mask_token"
        state["decoder.module_dict.dec_nested_dropout.renamed_token"] = state.pop(key)

    with pytest.raises(ValueError, match=r"missing \[.*dropout_mask_token.*\].*unexpected \[.*renamed_token"):
        gentok.load(_copy_snapshot(tmp_path, edit))


def test_mismatching_shapes_and_unsupported_options_raise(tmp_path):
    def edit(state):
        key = "encoder.module_dict.enc_register_module.registers"
        state[key] = state[key][:, :16].contiguous()

    with pytest.raises(CheckpointError, match="do not match"):
        gentok.load(_copy_snapshot(tmp_path, edit))
    out = tmp_path / "opt"
    shutil.copytree(SNAPSHOT, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["encoder"]["module_dict"]["enc_transformer"]["gated_mlp"] = False
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="gated_mlp"):
        gentok.load(out)


def test_pickles_are_refused(tmp_path):
    out = tmp_path / "pickled"
    out.mkdir()
    shutil.copy(SNAPSHOT / "config.json", out / "config.json")
    (out / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="safetensors"):
        gentok.load(out)


def test_training_the_official_network_says_so(model):
    with pytest.raises(NotImplementedError, match="official"):
        model(torch.rand(1, 3, 16, 16))
