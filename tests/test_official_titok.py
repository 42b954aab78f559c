"""Official TiTok checkpoints through `gentok.load`, exact to the official code.

The fixtures (tests/fixtures/official/titok_*, written by tools/make_official_fixtures.py from a checkout of
bytedance/1d-tokenizer) are small random-weight instances of every supported variant in the official format, with an
input and the official code's ids and decoded images (VAE variants: the posterior mean, a seeded sample and the
decode of the mean). No official code runs here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import gentok
from gentok.tokenizers.image.titok import TiTok
from gentok.cli import main as cli
from gentok.tokenizers.tokens import Latents, Tokens, read_token_file

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "official"
VARIANTS = ["titok_l32", "titok_b64", "titok_s128", "titok_bl64_vq8k", "titok_bl128_vq8k", "titok_sl256_vq8k"]
VAE_VARIANTS = ["titok_bl64_vae_c16", "titok_ll32_vae_c16"]
TOL = 1e-4


def _reference(name):
    return load_file(str(FIXTURES / name / "reference" / "outputs.safetensors"))


@pytest.mark.parametrize("name", VARIANTS)
def test_fixture_matches_official_code(name):
    ref = _reference(name)
    model = gentok.load(FIXTURES / name)
    assert isinstance(model, TiTok)
    tokens = model.encode(ref["images"])
    assert isinstance(tokens, Tokens)
    assert torch.equal(tokens.ids, ref["ids"])  # identical token ids
    assert model.tokens_per_item == ref["ids"].shape[1]
    with torch.no_grad():
        raw = model._decode_latents(model.quantizer.decode(ref["ids"]))
    assert (raw - ref["decoded"]).abs().max() < TOL  # unclamped, as the official decode_tokens returns it
    assert (model.decode(tokens) - ref["decoded"].clamp(0, 1)).abs().max() < TOL
    assert (model.decode(ref["ids"]) - ref["decoded"].clamp(0, 1)).abs().max() < TOL


@pytest.mark.parametrize("name", ["titok_l32", "titok_sl256_vq8k"])
def test_batched_equals_one_by_one(name):
    ref = _reference(name)
    model = gentok.load(FIXTURES / name)
    one = torch.cat([model.encode(ref["images"][i:i + 1]).ids for i in range(len(ref["images"]))])
    assert torch.equal(one, model.encode(ref["images"]).ids)


@pytest.mark.parametrize("name", ["titok_b64", "titok_bl64_vq8k"])
def test_save_pretrained_round_trip(name, tmp_path):
    ref = _reference(name)
    model = gentok.load(FIXTURES / name)
    model.save_pretrained(tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["type"] == "titok"
    again = gentok.load(tmp_path / "ours")
    assert torch.equal(again.encode(ref["images"]).ids, ref["ids"])
    assert torch.equal(again.decode(ref["ids"]), model.decode(ref["ids"]))


def _copy(name, tmp_path) -> Path:
    d = tmp_path / name
    shutil.copytree(FIXTURES / name, d, ignore=shutil.ignore_patterns("reference"))
    return d


def test_mismatching_weights_list_missing_and_unexpected_keys(tmp_path):
    d = _copy("titok_l32", tmp_path)
    state = load_file(str(d / "model.safetensors"))
    state.pop("decoder.mask_token")
    state["decoder.not_a_weight"] = torch.zeros(3)
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing \['decoder.mask_token'\].*unexpected \['decoder.not_a_weight'\]"):
        gentok.load(d)


def test_weights_of_another_size_are_refused(tmp_path):
    d = _copy("titok_bl64_vq8k", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["vq_model"]["vit_dec_width"] = 96
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do not match the shapes"):
        gentok.load(d)


def test_pickle_only_snapshot_is_refused(tmp_path):
    d = tmp_path / "bin_only"
    d.mkdir()
    shutil.copy(FIXTURES / "titok_l32" / "config.json", d / "config.json")
    (d / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match=r"only pickled weights.*safetensors"):
        gentok.load(d)


def test_stage1_and_unbuilt_layouts_are_refused_with_reason(tmp_path):
    d = _copy("titok_bl64_vq8k", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["vq_model"]["quantize_mode"] = "vae"  # vq8k weights (a codebook, 64 channels) under a VAE config
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"unexpected \['quantize.embedding.weight'\]"):
        gentok.load(d)
    cfg["model"]["vq_model"]["finetune_decoder"] = True  # the official code refuses this combination too
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="VAE with finetune_decoder"):
        gentok.load(d)
    d = _copy("titok_bl64_vae_c16", tmp_path / "vae")
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["vq_model"]["quantize_mode"] = "fsq"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown TiTok quantize_mode 'fsq'"):
        gentok.load(d)
    d = _copy("titok_l32", tmp_path / "s1")
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["vq_model"]["finetune_decoder"] = False
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="stage-1"):
        gentok.load(d)


def test_bad_input_is_refused():
    model = gentok.load(FIXTURES / "titok_s128")
    with pytest.raises(ValueError):
        model.decode(torch.full((1, 128), model.vocab_size))
    with pytest.raises(ValueError):
        model.decode(torch.zeros(1, 32, dtype=torch.long))


# -- VAE checkpoints: continuous tokens (Latents) ------------------------------------------------------------------
def _official_layout(t):
    """(b, C, 1, K), the official tokens' layout -> (b, K, C), gentok's."""
    return t.squeeze(2).transpose(1, 2)


@pytest.mark.parametrize("name", VAE_VARIANTS)
def test_vae_fixture_matches_official_code(name):
    ref = _reference(name)
    model = gentok.load(FIXTURES / name)
    assert isinstance(model, TiTok) and model.quantizer is None
    assert model.vocab_size is None and model.bits_per_token is None
    assert model.tokens_per_item == ref["mean"].shape[-1] and model.config.vae_dim == ref["mean"].shape[1]
    latents = model.encode(ref["images"])
    assert isinstance(latents, Latents) and latents.meta == {"posterior": "mode"}
    mean = _official_layout(ref["mean"])
    assert (latents.values - mean).abs().max() < 1e-5  # the posterior mean (mode)
    with torch.no_grad():
        raw = model._decode_latents(mean)
    assert (raw - ref["decoded"]).abs().max() < TOL  # unclamped, as the official decode_tokens returns it
    assert (model.decode(latents) - ref["decoded"].clamp(0, 1)).abs().max() < TOL
    assert torch.equal(model.decode(latents.values), model.decode(latents))  # a bare float tensor works too


@pytest.mark.parametrize("name", VAE_VARIANTS)
def test_vae_sampling_is_seeded_and_draws_from_the_posterior(name):
    ref = _reference(name)
    model = gentok.load(FIXTURES / name)
    seed = int(ref["seed"])
    a = model.encode(ref["images"], sample=True, generator=torch.Generator().manual_seed(seed))
    b = model.encode(ref["images"], sample=True, generator=torch.Generator().manual_seed(seed))
    other = model.encode(ref["images"], sample=True, generator=torch.Generator().manual_seed(seed + 1))
    mode = model.encode(ref["images"]).values
    assert a.meta == {"posterior": "sample"} and torch.equal(a.values, b.values)
    assert (a.values - mode).abs().min() > 0 and not torch.equal(a.values, other.values)
    # the noise is drawn in the official order: the same seed gives the official code's sample
    assert (a.values - _official_layout(ref["sample"])).abs().max() < 1e-5
    torch.manual_seed(seed)  # no generator: the global CPU generator, as in the official code
    assert torch.equal(model.encode(ref["images"], sample=True).values, a.values)


def test_vae_batched_equals_one_by_one():
    ref = _reference("titok_bl64_vae_c16")
    model = gentok.load(FIXTURES / "titok_bl64_vae_c16")
    one = torch.cat([model.encode(ref["images"][i:i + 1]).values for i in range(len(ref["images"]))])
    assert (one - model.encode(ref["images"]).values).abs().max() < 1e-6


@pytest.mark.parametrize("name", VAE_VARIANTS)
def test_vae_save_pretrained_round_trip(name, tmp_path):
    ref = _reference(name)
    model = gentok.load(FIXTURES / name)
    model.save_pretrained(tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["type"] == "titok" and saved["config"]["quantizer"] is None and saved["config"]["vae_dim"] == 16
    again = gentok.load(tmp_path / "ours")
    latents = model.encode(ref["images"])
    assert torch.equal(again.encode(ref["images"]).values, latents.values)
    assert torch.equal(again.decode(latents), model.decode(latents))
    g = [torch.Generator().manual_seed(3) for _ in range(2)]
    assert torch.equal(again.encode(ref["images"], sample=True, generator=g[0]).values,
                       model.encode(ref["images"], sample=True, generator=g[1]).values)


def test_vae_refuses_ids_and_bad_latents_and_vq_refuses_latents():
    vae = gentok.load(FIXTURES / "titok_ll32_vae_c16")
    good = torch.zeros(1, 32, 16)
    with pytest.raises(ValueError, match="continuous"):
        vae.decode(torch.zeros(1, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="continuous"):
        vae.decode(Tokens(torch.zeros(1, 32, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"shape \(b, 32, 16\)"):
        vae.decode(torch.zeros(1, 32, 8))
    with pytest.raises(ValueError, match="shape"):
        vae.decode(torch.zeros(32, 16))
    with pytest.raises(ValueError, match="finite"):
        vae.decode(good.clone().index_fill_(1, torch.tensor([3]), float("nan")))
    assert vae.decode(good.double()).shape == (1, 3, 16, 16)
    latents = vae.encode(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="no ids"):
        latents.ids  # what code that needs ids (e.g. pretokenizing for a generator) reads
    vq = gentok.load(FIXTURES / "titok_bl64_vq8k")
    with pytest.raises(ValueError, match="continuous Latents"):
        vq.decode(Latents(torch.zeros(1, 64, 64)))
    with pytest.raises(ValueError, match="options of a VAE"):
        vq.encode(torch.rand(1, 3, 16, 16), sample=True)


def test_generator_pretokenizing_refuses_a_vae_tokenizer(tmp_path):
    from gentok.generators.data import pretokenize

    vae = gentok.load(FIXTURES / "titok_bl64_vae_c16")
    images = torch.utils.data.TensorDataset(torch.rand(4, 3, 16, 16))
    data = [x for (x,) in images]
    with pytest.raises(ValueError, match="continuous tokens.*no ids"):
        pretokenize(vae, data, tmp_path / "ids.safetensors", "fp")


def test_vae_training_pass_adds_the_kl_term():
    from gentok.config import replace
    from gentok.quantizers import VQConfig

    vae = gentok.load(FIXTURES / "titok_bl64_vae_c16").train()
    x = _reference("titok_bl64_vae_c16")["images"]
    torch.manual_seed(0)
    out = vae(x)
    assert out.ids.shape == (2, 64, 16) and out.ids.dtype == torch.float32
    # the KL of the diagonal Gaussian posterior to N(0, I), summed per image, averaged over images
    with torch.no_grad():
        mean, logvar = vae._encode_latents(x).chunk(2, dim=-1)
        post = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
        kl = torch.distributions.kl_divergence(post, torch.distributions.Normal(0.0, 1.0)).sum((1, 2)).mean()
    assert torch.allclose(out.metrics["kl"], kl, rtol=1e-5)
    assert torch.allclose(out.loss, out.metrics["recon_loss"] + vae.config.kl_weight * kl, rtol=1e-5)
    out.loss.backward()
    assert vae.encoder.to_code.weight.grad[16:].abs().sum() > 0  # the log-variance rows learn (through KL + noise)
    with pytest.raises(ValueError, match="one bottleneck"):
        replace(vae.config, vae_dim=0)
    with pytest.raises(ValueError, match="one bottleneck"):
        replace(vae.config, quantizer=VQConfig(dim=16, codebook_size=8))


def test_latents_file_round_trip_and_kinds(tmp_path):
    latents = Latents(torch.randn(3, 5, 4), {"posterior": "mode"})
    latents.save(tmp_path / "l.safetensors", {"names": ["a", "b", "c"]})
    back, header = read_token_file(tmp_path / "l.safetensors")
    assert isinstance(back, Latents) and torch.equal(back.values, latents.values)
    assert back.meta == latents.meta and header == {"names": ["a", "b", "c"]}
    assert torch.equal(Latents.cat([latents[0], latents[1:]]).values, latents.values) and len(latents[1:]) == 2
    with pytest.raises(ValueError, match="continuous latents"):
        Tokens.load(tmp_path / "l.safetensors")
    Tokens(torch.zeros(2, 3, dtype=torch.long)).save(tmp_path / "t.safetensors")
    assert isinstance(read_token_file(tmp_path / "t.safetensors")[0], Tokens)
    with pytest.raises(ValueError, match="token ids"):
        Latents.load(tmp_path / "t.safetensors")
    with pytest.raises(ValueError, match="floating-point"):
        Latents(torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(b, n, d\)"):
        Latents(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="finite"):
        Latents(torch.tensor([[[float("inf")]]]))
    with pytest.raises(ValueError, match="belong in Latents"):
        Tokens(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="differ in shape"):
        Latents.cat([latents, Latents(torch.zeros(1, 5, 3))])


def test_vae_cli_encode_decode_info(tmp_path, capsys):
    from PIL import Image

    from gentok.data.photos import load_image

    model_dir = FIXTURES / "titok_bl64_vae_c16"
    images = _reference("titok_bl64_vae_c16")["images"]
    paths = []
    for i, im in enumerate(images):
        Image.fromarray((im.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(tmp_path / f"im{i}.png")
        paths.append(str(tmp_path / f"im{i}.png"))
    out = tmp_path / "lat.safetensors"
    assert cli(["encode", "--model", str(model_dir), *paths, "--out", str(out), "--batch-size", "1"]) == 0
    assert "continuous latents (2, 64, 16)" in capsys.readouterr().out
    model = gentok.load(model_dir)
    latents, header = read_token_file(out)
    assert isinstance(latents, Latents) and header["names"] == ["im0.png", "im1.png"]
    assert torch.equal(latents.values, model.encode(paths).values)
    assert cli(["decode", "--model", str(model_dir), str(out), "--out", str(tmp_path / "dec")]) == 0
    decoded = sorted((tmp_path / "dec").glob("*.png"))
    assert [p.name for p in decoded] == ["im0.png", "im1.png"]
    assert torch.allclose(load_image(decoded[1]), model.decode(latents)[1], atol=1 / 255 + 1e-6)
    assert cli(["encode", "--model", str(model_dir), *paths, "--out", str(tmp_path / "s.safetensors"),
                "--option", "sample=true"]) == 0
    assert read_token_file(tmp_path / "s.safetensors")[0].meta == {"posterior": "sample"}
    capsys.readouterr()
    assert cli(["info", str(model_dir)]) == 0
    info = capsys.readouterr().out
    assert "vocab_size: none (continuous tokens" in info and "tokens_per_item: 64" in info
    assert "converted from an official checkpoint" in info and '"vae_dim": 16' in info
    # a VQ model refuses the latents file with a message, not a traceback
    assert cli(["decode", "--model", str(FIXTURES / "titok_bl64_vq8k"), str(out), "--out", str(tmp_path / "x")]) == 2
    assert "continuous Latents" in capsys.readouterr().err


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SHORT = ["--max-steps", "2", "--set", "train.batch_size=4", "--set", "train.checkpoint_every=2",
         "--set", "train.eval_every=0", "--set", "train.warmup_steps=1"]


def _run(cmd):
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=420, env=ENV)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


def test_generator_recipe_trains_on_a_converted_checkpoint(tmp_path):
    out = tmp_path / "gen"
    _run([sys.executable, "recipes/generator.py", "--tokenizer", str(FIXTURES / "titok_l32"), "--preset", "tiny",
          "--output-dir", str(out), "--num-images", "32", "--samples", "2", "--k", "2", *SHORT])
    ids = load_file(str(out / "tokens_train.safetensors"))
    assert any(v.shape[-1] == 32 for v in ids.values())  # 32 tokens per image of the converted l32
    assert (out / "model" / "model.safetensors").is_file() and (out / "samples.png").is_file()


def test_titok_recipe_fine_tunes_from_a_converted_checkpoint(tmp_path):
    out = tmp_path / "ft"
    _run([sys.executable, "recipes/titok.py", "--init-from", str(FIXTURES / "titok_bl64_vq8k"),
          "--output-dir", str(out), *SHORT])
    tuned = gentok.load(out / "model")
    start = gentok.load(FIXTURES / "titok_bl64_vq8k")
    assert tuned.config == start.config
    moved = [k for k, v in start.state_dict().items() if not torch.equal(v, tuned.state_dict()[k])]
    assert moved  # it trained ...
    assert (tuned.encoder.pos - start.encoder.pos).abs().max() < 0.05  # ... starting from the converted weights


def test_titok_recipe_refuses_to_fine_tune_a_vae(tmp_path):
    r = subprocess.run([sys.executable, "recipes/titok.py", "--init-from", str(FIXTURES / "titok_bl64_vae_c16"),
                        "--output-dir", str(tmp_path / "ft"), *SHORT], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode != 0 and "VAE TiTok" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "ft" / "model").exists()
