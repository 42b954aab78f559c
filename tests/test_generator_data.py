"""The generator recipe on the dataset forms: tokens of an ImageFolder tree / tar shards, their class labels passed to
a class-conditional AR generator, a bounded number of images read from an endless stream, the cache reused."""

from __future__ import annotations

import io
import json
import os
import runpy
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import gentok
from gentok.quantizers.vq import VQConfig
from gentok.tokenizers.image.titok import TiTok, TiTokConfig

ROOT = Path(__file__).resolve().parents[1]
SIDE = 20  # written images; the tokenizer sees 16 px views
TRAIN = ["--preset", "tiny", "--max-steps", "3", "--samples", "2", "--set", "train.batch_size=4",
         "--set", "train.eval_every=0", "--set", "train.warmup_steps=1", "--set", "train.checkpoint_every=3",
         "--data-workers", "0"]


def _png(i: int, cls: int) -> bytes:
    rng = np.random.default_rng(i)
    a = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    a[..., cls] = 255  # the class shows as a saturated channel
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = TiTokConfig(image_size=16, patch_size=8, num_tokens=4, width=32, enc_depth=1, dec_depth=1, heads=2,
                      refine_channels=4, quantizer=VQConfig(dim=8, codebook_size=32, cosine=False))
    path = tmp_path_factory.mktemp("tok") / "titok"
    TiTok(cfg).save_pretrained(path)
    return path


def _tree(root: Path, per_class: int = 6) -> Path:
    for split, n in (("train", per_class), ("val", 2)):
        for c in range(2):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (d / f"{split}{i}.png").write_bytes(_png(100 * c + i + (50 if split == "val" else 0), c))
    return root


def _tars(root: Path, shards: int = 4, per_shard: int = 4, labels: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with tarfile.open(root / f"train-{s:03d}.tar", "w") as tar:
            for i in range(s * per_shard, (s + 1) * per_shard):
                members = {f"{i:05d}.png": _png(i, i % 3)}
                if labels:
                    members[f"{i:05d}.cls"] = str(i % 3).encode()
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


def _recipe(argv):
    return runpy.run_path(str(ROOT / "recipes" / "generator.py"), run_name="generator_data_test")["main"](argv)


def test_imagefolder_tree_trains_a_class_conditional_generator(tmp_path, tokenizer_dir):
    out = tmp_path / "gen"
    _recipe(["--model", "ar", "--tokenizer", str(tokenizer_dir), "--data", str(_tree(tmp_path / "tree")),
             "--num-images", "10", "--output-dir", str(out), *TRAIN])
    model = gentok.load(out / "model")
    assert model.config.num_classes == 2 and model.config.seq_len == 4
    cache = load_file(str(out / "tokens_train.safetensors"))
    assert cache["ids"].shape == (10, 4)  # a bounded number of views of the endless stream
    assert set(cache["labels"].tolist()) <= {0, 1} and len(set(cache["labels"].tolist())) == 2
    ids = cache["ids"]
    logits = model(ids[:2], torch.tensor([0, 1]))  # the class is the condition
    assert not torch.allclose(logits[0, 0], model(ids[:1], torch.tensor([1]))[0, 0])
    assert logits.shape == (2, 5, 32)
    summary = json.loads((out / "summary.json").read_text())
    assert "ar_fresh" in summary["sampling"]
    # a rerun with the same flags reads the cache: same ids, the model untouched (already trained to max-steps)
    mtime = (out / "tokens_train.safetensors").stat().st_mtime_ns
    _recipe(["--model", "ar", "--tokenizer", str(tokenizer_dir), "--data", str(tmp_path / "tree"),
             "--num-images", "10", "--output-dir", str(out), *TRAIN])
    assert (out / "tokens_train.safetensors").stat().st_mtime_ns == mtime


def test_held_out_labels_are_the_class_of_each_image(tmp_path, tokenizer_dir):
    from gentok.data.images import default_image_data
    from gentok.generators.data import tokenizer_fingerprint
    from gentok.training.generator_data import generator_tokens

    train, held = default_image_data(16, str(_tree(tmp_path / "tree")), labels=True, num_workers=0)
    tok = gentok.load(tokenizer_dir)
    tokens = generator_tokens(tok, train, held, tmp_path / "cache", tokenizer_fingerprint(tokenizer_dir), "t", 6)
    # each held-out image's label is its class: the channel its image saturates
    assert sorted(tokens.eval_labels.tolist()) == [0, 0, 1, 1]  # val/class0 holds two images, val/class1 two
    assert [int(held[i].mean((1, 2)).argmax()) for i in range(len(held))] == tokens.eval_labels.tolist()
    assert tokens.classes == ("class0", "class1") and tokens.num_classes() == 2 and tokens.unlabelled() == 0
    # the views of the stream, encoded: the first 6 of the stream, in its order
    views = [v for v, _ in zip(iter(train), range(6))]
    assert torch.equal(tokens.train_ids, tok.encode(torch.stack([v for v, _ in views])).ids)
    assert tokens.train_labels.tolist() == [y for _, y in views]


def test_tar_shards_with_cls_labels_train_a_class_conditional_generator(tmp_path, tokenizer_dir):
    out = tmp_path / "gen"
    _recipe(["--model", "ar", "--tokenizer", str(tokenizer_dir), "--data", str(_tars(tmp_path / "tars")),
             "--num-images", "20", "--output-dir", str(out), *TRAIN])  # 20 > the 12 training records: epochs wrap
    assert gentok.load(out / "model").config.num_classes == 3  # labels 0..2 and no class names
    assert load_file(str(out / "tokens_train.safetensors"))["ids"].shape == (20, 4)
    # --num-classes raises the count (ImageNet shards read in part), --unconditional drops the labels
    _recipe(["--model", "ar", "--tokenizer", str(tokenizer_dir), "--data", str(tmp_path / "tars"),
             "--num-images", "20", "--output-dir", str(tmp_path / "k5"), "--num-classes", "5", *TRAIN])
    assert gentok.load(tmp_path / "k5" / "model").config.num_classes == 5
    _recipe(["--model", "ar", "--tokenizer", str(tokenizer_dir), "--data", str(tmp_path / "tars"),
             "--num-images", "8", "--output-dir", str(tmp_path / "u"), "--unconditional", *TRAIN])
    assert gentok.load(tmp_path / "u" / "model").config.num_classes == 0


def test_unlabelled_shards_and_label_mistakes(tmp_path, tokenizer_dir):
    from gentok.cli.errors import UsageError

    tars = _tars(tmp_path / "tars", labels=False)
    out = tmp_path / "gen"
    _recipe(["--model", "asarm", "--tokenizer", str(tokenizer_dir), "--data", str(tars), "--num-images", "6",
             "--output-dir", str(out), *TRAIN])
    assert "labels" not in load_file(str(out / "tokens_train.safetensors"))
    with pytest.raises(UsageError, match="has no class labels"):
        _recipe(["--model", "ar", "--tokenizer", str(tokenizer_dir), "--data", str(tars), "--num-images", "6",
                 "--output-dir", str(tmp_path / "x"), "--num-classes", "3", *TRAIN])
    with pytest.raises(UsageError, match="labels up to 2"):
        _recipe(["--model", "ar", "--tokenizer", str(tokenizer_dir), "--data", str(_tars(tmp_path / "lab")),
                 "--num-images", "6", "--output-dir", str(tmp_path / "y"), "--num-classes", "2", *TRAIN])


def test_generator_recipe_on_tar_shards_with_two_processes(tmp_path, tokenizer_dir):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                        "--mixed_precision", "no", "--dynamo_backend", "no", "recipes/generator.py", "--model", "ar",
                        "--tokenizer", str(tokenizer_dir), "--data", str(_tars(tmp_path / "tars")),
                        "--num-images", "16", "--output-dir", str(out), *TRAIN],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    meta = json.loads((out / "checkpoints" / "step-00000003" / "metadata.json").read_text())
    assert meta["num_processes"] == 2 and gentok.load(out / "model").config.num_classes == 3
