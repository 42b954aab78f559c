"""Official TiTok checkpoints through `gentok.load`, exact to the official code.

The fixtures (tests/fixtures/official/titok_*, written by tools/make_official_fixtures.py from a checkout of
bytedance/1d-tokenizer) are small random-weight instances of every supported variant in the official format, with an
input and the official code's ids and decoded images. No official code runs here.
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
from gentok.tokenizers.tokens import Tokens

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "official"
VARIANTS = ["titok_l32", "titok_b64", "titok_s128", "titok_bl64_vq8k", "titok_bl128_vq8k", "titok_sl256_vq8k"]
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


def test_vae_and_stage1_checkpoints_are_refused_with_reason(tmp_path):
    d = _copy("titok_bl64_vq8k", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["vq_model"]["quantize_mode"] = "vae"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="continuous tokens"):
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
