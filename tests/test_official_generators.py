"""Official generators (RAR; TiTok's MaskGIT ImageBert / UViTBert) through `gentok.load`, exact to the official code.

The fixtures (tests/fixtures/official/{rar_tiny, maskgit_vit_tiny, maskgit_uvit_tiny}, written by
tools/make_official_fixtures.py from a checkout of bytedance/1d-tokenizer) are random-weight models in the published
formats with the official logits for fixed inputs and the tokens of the official seeded `generate` for several
guidance schedules and temperatures. No official code runs here.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import gentok
import gentok.pretrained.convert as convert
from gentok.checkpoint import CheckpointError
from gentok.generators.maskgit import MaskGITBert, MaskGITUViT, masked_token_loss
from gentok.generators.rar import RAR, preset, rar_loss
from gentok.sampling.guided import guided_generate
from gentok.sampling.maskgit import maskgit_generate

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "official"
RAR_DIR = FIXTURES / "rar_tiny"
MASKGIT = {"maskgit_vit_tiny": MaskGITBert, "maskgit_uvit_tiny": MaskGITUViT}
OURS = {"generator-rar": "gentok.pretrained.rar", "generator-titok-maskgit": "gentok.pretrained.titok_generator",
        "maskgit-vqgan-official": "gentok.pretrained.vqgan"}
VQGAN_DIR = FIXTURES / "maskgit_vqgan_tiny"


@pytest.fixture(autouse=True)
def converters(monkeypatch):
    """The converters this branch declares in pyproject.toml, whatever the installed metadata lists."""
    known = {**convert._converters(), **OURS}
    monkeypatch.setattr(convert, "_converters", lambda: known)


def _reference(d: Path):
    return load_file(str(d / "reference" / "outputs.safetensors")), json.loads((d / "reference" / "settings.json")
                                                                              .read_text())


def test_entry_points_are_declared():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert {k: meta["gentok.converters"][k] for k in OURS} == OURS
    # the TiTok generator converter is tried before the tokenizer's, whose detect also matches its config
    assert "generator-titok-maskgit" < "titok-official"
    for t in ("generator.rar", "generator.maskgit_bert", "generator.maskgit_uvit"):
        assert meta["gentok.models"][t].startswith("gentok.generators.")
    assert meta["gentok.models"]["maskgit_vqgan"] == "gentok.tokenizers.image.vqgan"


# -- RAR ------------------------------------------------------------------------------------------------------------
def rar():
    return gentok.load(RAR_DIR / "rar_tiny.bin")


def test_rar_logits_match_official_full_and_cached():
    ref, _ = _reference(RAR_DIR)
    model = rar()
    assert isinstance(model, RAR) and model.config.seq_len == 16 and model.config.num_classes == 10
    with torch.no_grad():
        full = model(ref["ids"], ref["cond"])
        cache = model.new_cache()
        steps = [model(ref["ids"][:, :5], ref["cond"], cache=cache)]
        steps += [model(ref["ids"][:, t:t + 1], ref["cond"], cache=cache) for t in range(5, 16)]
    assert (full - ref["logits"]).abs().max() < 1e-5
    assert (torch.cat(steps, 1) - ref["logits"]).abs().max() < 1e-5


@pytest.mark.parametrize("setting", ["cfg_pow", "no_guidance", "constant_hot"])
@pytest.mark.parametrize("use_cache", [True, False])
def test_rar_seeded_sampling_is_token_identical_to_official(setting, use_cache):
    ref, settings = _reference(RAR_DIR)
    s = settings[setting]
    out = guided_generate(rar(), ref["labels"], s["guidance_scale"], s["guidance_scale_pow"], s["temperature"],
                          seed=settings["seed"], use_cache=use_cache)
    assert torch.equal(out.ids, ref[f"samples_{setting}"])


@pytest.mark.parametrize("positions", [1, 3, 40])
def test_rar_precomputed_modulations_in_any_chunking_give_the_official_tokens(positions, monkeypatch):
    """The guided sampler computes the adaLN maps `chunk` positions at a time; chunk boundaries change nothing."""
    import gentok.sampling.guided as guided

    ref, settings = _reference(RAR_DIR)
    model = rar()
    per_position = 2 * 3 * (6 * model.config.dim * model.config.depth + 2 * model.config.dim) * 4  # 2 x 3 rows
    monkeypatch.setattr(guided, "MODULATION_BYTES", positions * per_position)
    assert guided._chunk(model, 6) == min(positions, 32)
    s = settings["cfg_pow"]
    out = guided_generate(model, ref["labels"], s["guidance_scale"], s["guidance_scale_pow"], s["temperature"],
                          seed=settings["seed"])
    assert torch.equal(out.ids, ref["samples_cfg_pow"])


def test_rar_loads_from_a_folder_a_named_file_and_safetensors(tmp_path):
    ref, _ = _reference(RAR_DIR)
    state = convert.read_weights_file(RAR_DIR / "rar_tiny.bin")
    save_file(state, str(tmp_path / "rar_tiny.safetensors"))
    models = [gentok.load(RAR_DIR), gentok.load(RAR_DIR, filename="rar_tiny.bin", heads=4),
              gentok.load(tmp_path / "rar_tiny.safetensors")]
    with torch.no_grad():
        for m in models:
            assert torch.equal(m(ref["ids"], ref["cond"]), rar()(ref["ids"], ref["cond"]))
    (tmp_path / "rar_b.safetensors").write_bytes((tmp_path / "rar_tiny.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="several weight files.*filename="):
        gentok.load(tmp_path)


def test_rar_heads_are_read_from_the_weights_and_a_wrong_override_is_refused():
    assert gentok.load(RAR_DIR / "rar_tiny.bin").config.heads == 4  # width 32, per-head norms of 8
    with pytest.raises(CheckpointError, match="heads=16 disagrees.*4 heads"):
        gentok.load(RAR_DIR / "rar_tiny.bin", heads=16)


def test_hub_id_with_a_filename_offline_fails_at_once_naming_the_local_alternative(tmp_path):
    import os
    import subprocess
    import sys

    code = ("import gentok\ntry:\n    gentok.load('yucornetto/RAR', filename='rar_b.bin')\n"
            "except gentok.CheckpointError as e:\n    print(e)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, timeout=60)
    assert "not in the local Hugging Face cache" in out.stdout and "gentok.load('/path/to/rar_b.bin')" in out.stdout
    with pytest.raises(CheckpointError, match="must name a .safetensors or .bin"):
        gentok.load("yucornetto/RAR", filename="rar_b.pkl")


def test_options_a_converter_does_not_take_are_refused():
    with pytest.raises(CheckpointError, match=r"takes no option\(s\) \['depth'\]"):
        gentok.load(RAR_DIR, depth=3)
    with pytest.raises(CheckpointError, match=r"titok-official converter takes no option"):
        gentok.load(FIXTURES / "titok_l32", heads=4)


def test_rar_save_load_round_trip(tmp_path):
    ref, _ = _reference(RAR_DIR)
    model = rar()
    model.save_pretrained(tmp_path / "m")
    again = gentok.load(tmp_path / "m")
    assert type(again) is RAR and again.config == model.config
    with torch.no_grad():
        assert torch.equal(again(ref["ids"], ref["cond"]), model(ref["ids"], ref["cond"]))
    with pytest.raises(CheckpointError, match="apply only to converted"):
        gentok.load(tmp_path / "m", heads=4)


class Payload:
    """An arbitrary object: unpickling it would mean importing and building whatever a file names."""


def test_rar_refuses_pickles_with_objects_and_non_state_dicts(tmp_path):
    torch.save({"w": torch.zeros(2), "x": Payload()}, tmp_path / "evil.bin")
    with pytest.raises(CheckpointError, match="more than a state dict"):
        gentok.load(tmp_path / "evil.bin")
    torch.save({"w": torch.zeros(2), "n": 3}, tmp_path / "mixed.bin")
    with pytest.raises(CheckpointError, match="not a flat state dict"):
        gentok.load(tmp_path / "mixed.bin")
    data = (RAR_DIR / "rar_tiny.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        gentok.load(tmp_path / "cut.bin")
    (tmp_path / "rar.pt").write_bytes(data)
    with pytest.raises(CheckpointError, match="not .pt"):
        gentok.load(tmp_path / "rar.pt")


def test_rar_mismatched_keys_are_listed(tmp_path):
    state = convert.read_weights_file(RAR_DIR / "rar_tiny.bin")
    state.pop("blocks.1.attn.q_norm.weight")
    state["blocks.1.extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing \['blocks.1.attn.q_norm.weight'\].*blocks.1.extra.weight"):
        gentok.load(tmp_path / "w.safetensors")
    foreign = load_file(str(FIXTURES / "titok_l32" / "model.safetensors"))
    save_file(foreign, str(tmp_path / "titok.safetensors"))
    with pytest.raises(CheckpointError, match="no converter recognises"):
        gentok.load(tmp_path / "titok.safetensors")


def test_rar_trains_from_its_loss():
    torch.manual_seed(0)
    model = RAR(preset("tiny"))
    ids, cond = torch.randint(0, 64, (4, 16)), torch.tensor([0, 1, 2, 10])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss, _ = rar_loss(model, (ids, cond))
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first


def test_rar_bad_class_ids():
    model = rar()
    with pytest.raises(ValueError, match=r"class ids in \[0, 10\]"):
        model(torch.zeros(1, 3, dtype=torch.long), torch.tensor([11]))
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 10\)"):
        guided_generate(model, torch.tensor([10]))  # "no class" is not a class to sample


# -- TiTok MaskGIT generators ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MASKGIT))
def test_maskgit_logits_match_official(name):
    ref, _ = _reference(FIXTURES / name)
    model = gentok.load(FIXTURES / name)
    assert type(model) is MASKGIT[name]
    null = torch.full_like(ref["cond"], model.null_class)
    with torch.no_grad():
        assert (model(ref["ids"], ref["cond"]) - ref["logits"]).abs().max() < 1e-5
        assert (model(ref["ids"], null) - ref["logits_null"]).abs().max() < 1e-5


@pytest.mark.parametrize("name", sorted(MASKGIT))
@pytest.mark.parametrize("setting", ["linear", "power_cosine", "constant"])
def test_maskgit_seeded_sampling_is_token_identical_to_official(name, setting):
    ref, settings = _reference(FIXTURES / name)
    s = settings[setting]
    out = maskgit_generate(gentok.load(FIXTURES / name), ref["labels"], steps=s["steps"],
                           guidance_scale=s["guidance_scale"], guidance_decay=s["guidance_decay"],
                           guidance_scale_pow=s["guidance_scale_pow"], temperature=s["temperature"],
                           softmax_temperature_annealing=s["softmax_temperature_annealing"], seed=settings["seed"])
    assert torch.equal(out.ids, ref[f"samples_{setting}"])
    assert int(out.nfe[0]) == s["steps"]


@pytest.mark.parametrize("name", sorted(MASKGIT))
def test_maskgit_save_load_round_trip_and_training_loss(name, tmp_path):
    ref, _ = _reference(FIXTURES / name)
    model = gentok.load(FIXTURES / name)
    model.save_pretrained(tmp_path / "m")
    again = gentok.load(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(again(ref["ids"], ref["cond"]), model(ref["ids"], ref["cond"]))
    loss, _ = masked_token_loss(again.train(), (torch.randint(0, 64, (2, 16)), torch.tensor([1, 2])),
                                torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and again.head.weight.grad.abs().sum() > 0


def test_maskgit_mismatched_keys_and_pickle_only_snapshots(tmp_path):
    src = FIXTURES / "maskgit_uvit_tiny"
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "config.json").write_text((src / "config.json").read_text())
    state = load_file(str(src / "model.safetensors"))
    state.pop("out_blocks.0.skip_linear.bias")
    save_file(state, str(tmp_path / "cut" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing \['out_blocks.0.skip_linear.bias'\]"):
        gentok.load(tmp_path / "cut")
    (tmp_path / "cut" / "config.json").write_text((FIXTURES / "maskgit_vit_tiny" / "config.json").read_text()
                                                 .replace('"hidden_size": 32', '"hidden_size": 48'))
    with pytest.raises(CheckpointError, match="do not match"):
        gentok.load(tmp_path / "cut")


def test_maskgit_config_wrapped_by_the_hub_mixin_loads_the_same(tmp_path):
    src = FIXTURES / "maskgit_uvit_tiny"
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "config.json").write_text(json.dumps({"config": json.loads((src / "config.json").read_text())}))
    (tmp_path / "w" / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    ref, _ = _reference(src)
    with torch.no_grad():
        assert (gentok.load(tmp_path / "w")(ref["ids"], ref["cond"]) - ref["logits"]).abs().max() < 1e-5


def test_titok_tokenizer_snapshots_still_load_as_tokenizers():
    """The generator converter declines a tokenizer snapshot even though their configs look alike."""
    from gentok.tokenizers.image.titok import TiTok

    assert isinstance(gentok.load(FIXTURES / "titok_l32"), TiTok)


def test_maskgit_bad_inputs():
    model = gentok.load(FIXTURES / "maskgit_vit_tiny")
    with pytest.raises(ValueError, match="mask id included"):
        model(torch.full((1, 16), 65), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 10\)"):
        maskgit_generate(model, torch.tensor([10]))
    with pytest.raises(ValueError, match="guidance_decay"):
        maskgit_generate(model, torch.tensor([1]), guidance_decay="cosine")


# -- gentok generate ------------------------------------------------------------------------------------------------
def _shaped_for_titok_l32(cls, config_cls, tmp_path):
    """A random generator over the TiTok-L-32 fixture's ids (1024 codes, 32 tokens), saved as a gentok checkpoint."""
    torch.manual_seed(0)
    model = cls(config_cls(vocab_size=1024, seq_len=32, num_classes=10, dim=32, depth=2, heads=4, mlp_dim=64))
    return model.save_pretrained(tmp_path / cls.__name__)


def test_cli_generate_writes_images_and_a_record(tmp_path, capsys):
    from PIL import Image

    from gentok.cli import main as cli
    from gentok.generators.rar import RARConfig

    gen_dir = _shaped_for_titok_l32(RAR, RARConfig, tmp_path)
    args = ["generate", "--generator", str(gen_dir), "--tokenizer", str(FIXTURES / "titok_l32"), "--classes", "1,3",
            "--num", "2", "--batch-size", "3", "--option", "guidance_scale=2", "--option", "guidance_scale_pow=1"]
    assert cli(args + ["--out", str(tmp_path / "a")]) == 0
    assert "generated 4 image(s)" in capsys.readouterr().out
    record = json.loads((tmp_path / "a" / "generation.json").read_text())
    assert record["sampler"] == "guided_ar" and record["nfe_per_image"] == 32 and record["seed"] == 0
    assert record["settings"] == {"guidance_scale": 2, "guidance_scale_pow": 1}
    assert record["files"] == ["00000_class1.png", "00001_class1.png", "00002_class3.png", "00003_class3.png"]
    for f in record["files"]:
        assert Image.open(tmp_path / "a" / f).size == (16, 16)
    assert cli(args + ["--out", str(tmp_path / "b")]) == 0  # same seed, same images
    for f in record["files"]:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_generate_with_a_maskgit_generator_decodes_its_tokens(tmp_path):
    from gentok.generate import generate_images
    from gentok.generators.maskgit import MaskGITConfig

    generator = gentok.load(_shaped_for_titok_l32(MaskGITBert, MaskGITConfig, tmp_path))
    tokenizer = gentok.load(FIXTURES / "titok_l32")
    record = generate_images(generator, tokenizer, [0, 9], 1, tmp_path / "out", seed=3, progress=False, steps=4,
                             guidance_decay="linear")
    assert record["sampler"] == "maskgit" and record["nfe_per_image"] == 4 and record["images"] == 2
    # the files are the tokenizer's decode of the sampler's tokens for the same seed
    ids = maskgit_generate(generator, torch.tensor([0, 9]), steps=4, guidance_decay="linear", seed=3).ids
    expected = tokenizer.decode(ids)
    from PIL import Image
    import numpy as np

    for i, f in enumerate(record["files"]):
        got = torch.from_numpy(np.array(Image.open(tmp_path / "out" / f))).permute(2, 0, 1).float() / 255
        assert (got - expected[i]).abs().max() <= 0.5 / 255 + 1e-6


def test_generate_drives_our_own_class_conditional_ar_model_too(tmp_path):
    from gentok.generate import generate_images
    from gentok.generators.ar import ARConfig, ARTransformer

    torch.manual_seed(0)
    model = ARTransformer(ARConfig(vocab_size=1024, seq_len=32, dim=32, depth=1, heads=4, num_classes=5))
    record = generate_images(model, gentok.load(FIXTURES / "titok_l32"), [4], 3, tmp_path, batch_size=2,
                             progress=False, temperature=0.9)
    assert record["sampler"] == "ar" and record["images"] == 3 and record["nfe_per_image"] == 32
    assert sorted(p.name for p in tmp_path.glob("*.png")) == record["files"]


def test_generate_errors_speak_to_the_user(tmp_path):
    from gentok.cli import main as cli
    from gentok.generate import generate_images
    from gentok.generators.rar import RARConfig

    gen_dir = _shaped_for_titok_l32(RAR, RARConfig, tmp_path)
    generator, tokenizer = gentok.load(gen_dir), gentok.load(FIXTURES / "titok_l32")
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 10\).*\[10\]"):
        generate_images(generator, tokenizer, [1, 10], 1, tmp_path / "x")
    with pytest.raises(ValueError, match="mismatched vocabularies: the generator samples 64 codes"):
        generate_images(rar(), tokenizer, [1], 1, tmp_path / "x")
    with pytest.raises(ValueError, match="no decoder"):
        generate_images(generator, generator, [1], 1, tmp_path / "x")
    with pytest.raises(ValueError, match="continuous tokens"):
        generate_images(generator, gentok.load(FIXTURES / "titok_ll32_vae_c16"), [1], 1, tmp_path / "x")
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['steps'\]"):
        generate_images(generator, tokenizer, [1], 1, tmp_path / "x", steps=3)
    code = cli(["generate", "--generator", str(gen_dir), "--tokenizer", str(FIXTURES / "titok_l32"),
                "--classes", "1,x", "--out", str(tmp_path / "y")])
    assert code == 2
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_rar_cache_with_ragged_rows_and_crop_matches_the_full_pass():
    """What speculative and any-subset samplers do with a cache: rows at different lengths, rolled back by crop."""
    ref, _ = _reference(RAR_DIR)
    model, ids, cond = rar(), ref["ids"], ref["cond"]
    with torch.no_grad():
        full = model(ids, cond)
        cache = model.new_cache()
        model.decode(ids[:, :6], cache, cond)  # both rows: cls, class, 6 tokens
        cache.crop([2 + 3, 2 + 6])  # row 0 rolls back to 3 tokens
        step = model.decode(torch.stack([ids[0, 3:5], ids[1, 6:8]]), cache, cond)  # ragged: each from its own length
    assert (step[0] - full[0, 4:6]).abs().max() < 1e-5
    assert (step[1] - full[1, 7:9]).abs().max() < 1e-5


# -- MaskGIT-VQGAN (RAR's tokenizer) and generation on the official fixtures ----------------------------------------
def vqgan():
    return gentok.load(VQGAN_DIR / "maskgit_vqgan_tiny.bin", image_size=8)


def test_vqgan_matches_official_and_round_trips(tmp_path):
    from gentok.tokenizers.image.vqgan import MaskGitVQGAN

    ref = load_file(str(VQGAN_DIR / "reference" / "outputs.safetensors"))
    tok = vqgan()
    assert type(tok) is MaskGitVQGAN and tok.vocab_size == 64 and tok.tokens_per_item == 16
    assert torch.equal(tok.encode(ref["images"]).ids, ref["ids"])
    assert (tok.decode(ref["ids"]) - ref["decoded"]).abs().max() < 1e-5
    tok.save_pretrained(tmp_path / "t")
    again = gentok.load(tmp_path / "t")
    assert torch.equal(again.decode(ref["ids"]), tok.decode(ref["ids"]))
    out = again(ref["images"])
    out.loss.backward()
    assert torch.isfinite(out.loss) and again.codebook.grad.abs().sum() > 0
    with pytest.raises(CheckpointError, match="not divisible"):
        gentok.load(VQGAN_DIR / "maskgit_vqgan_tiny.bin", image_size=7)


def test_generate_end_to_end_on_the_official_fixtures(tmp_path):
    """RAR fixture + MaskGIT-VQGAN fixture: the CLI writes the tokenizer's decode of the seeded RAR samples."""
    from PIL import Image
    import numpy as np

    from gentok.cli import main as cli

    vqgan().save_pretrained(tmp_path / "vqgan")
    args = ["generate", "--generator", str(RAR_DIR), "--generator-file", "rar_tiny.bin", "--tokenizer",
            str(tmp_path / "vqgan"), "--classes", "1,4,7", "--num", "1", "--seed", "4321", "--out", str(tmp_path / "o"),
            "--option", "guidance_scale=4.0", "--option", "guidance_scale_pow=2.75"]
    assert cli(args) == 0
    ref, _ = _reference(RAR_DIR)
    expected = vqgan().decode(ref["samples_cfg_pow"])  # the official generate's tokens for these classes and seed
    record = json.loads((tmp_path / "o" / "generation.json").read_text())
    assert record["sampler"] == "guided_ar" and record["tokenizer"]["type"] == "maskgit_vqgan"
    for i, f in enumerate(record["files"]):
        got = torch.from_numpy(np.array(Image.open(tmp_path / "o" / f))).permute(2, 0, 1).float() / 255
        assert (got - expected[i]).abs().max() <= 0.5 / 255 + 1e-6
