"""recipes/generator.py trains the field's generator architectures (RAR, TiTok's MaskGIT) from scratch and fine-tunes
converted official generators on the tokens of a user's images."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gentok
from gentok.config import replace
from gentok.quantizers import VQConfig
from gentok.tokenizers.image.titok import PRESETS, TiTok

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = ROOT / "tests" / "fixtures" / "official"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
SHORT = ["--max-steps", "2", "--set", "train.batch_size=4", "--set", "train.checkpoint_every=2",
         "--set", "train.eval_every=0", "--set", "train.warmup_steps=1", "--num-images", "16", "--samples", "2",
         "--fid-samples", "2"]


@pytest.fixture(scope="module")
def tokenizer_64x16(tmp_path_factory):
    """A tiny TiTok whose tokens fit the official generator fixtures: 16 tokens of 64 ids."""
    torch.manual_seed(0)
    cfg = replace(PRESETS["tiny"], image_size=32, patch_size=8, num_tokens=16, colour_tokens=0, width=32, enc_depth=1,
                  dec_depth=1, heads=2, refine_channels=4, quantizer=VQConfig(dim=8, codebook_size=64, cosine=False))
    path = tmp_path_factory.mktemp("tok") / "titok"
    TiTok(cfg).save_pretrained(path)
    return path


def _run(args, expect=0):
    r = subprocess.run([sys.executable, "recipes/generator.py", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=420, env=ENV)
    assert r.returncode == expect, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


@pytest.mark.parametrize("family,cls", [("rar", "RAR"), ("maskgit", "MaskGITBert")])
def test_trains_the_field_architectures_from_scratch(family, cls, tokenizer_64x16, tmp_path):
    out = tmp_path / family
    _run(["--model", family, "--tokenizer", str(tokenizer_64x16), "--output-dir", str(out), *SHORT])
    model = gentok.load(out / "model")
    assert type(model).__name__ == cls and model.vocab_size == 64 and model.seq_len == 16
    assert (out / "samples.png").is_file()


@pytest.mark.parametrize("fixture", ["rar_tiny", "maskgit_vit_tiny"])
def test_fine_tunes_a_converted_official_generator(fixture, tokenizer_64x16, tmp_path):
    out = tmp_path / fixture
    _run(["--init-from", str(OFFICIAL / fixture), "--tokenizer", str(tokenizer_64x16), "--output-dir", str(out),
          *SHORT])
    start, tuned = gentok.load(OFFICIAL / fixture), gentok.load(out / "model")
    assert type(tuned) is type(start) and tuned.config == start.config
    moved = [k for k, v in start.state_dict().items() if not torch.equal(v, tuned.state_dict()[k])]
    assert moved  # it trained, from the converted weights:
    drift = max(float((v - tuned.state_dict()[k]).abs().max()) for k, v in start.state_dict().items())
    assert drift < 0.05


def test_a_generator_of_other_tokens_is_refused_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "recipes/generator.py", "--init-from", str(OFFICIAL / "rar_tiny"),
                        "--tokenizer", str(OFFICIAL / "titok_l32"), "--output-dir", str(tmp_path / "x"), *SHORT],
                       cwd=ROOT, capture_output=True, text=True, timeout=420, env=ENV)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "64 ids x 16 positions" in r.stderr and "--tokenizer" in r.stderr
