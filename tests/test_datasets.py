"""Dataset forms (gentok.data.records / streams): every form reads the same images as the folder form, labels come
from class folders, processes and loader workers read disjoint shards, a resumed stream gives the uninterrupted
stream's batches, and unreadable images are skipped and counted."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from gentok.data.images import default_image_data, image_data_form
from gentok.data.photos import decode_image, folder_photos
from gentok.data.records import detect_format, expand_pattern, find_dataset, read_shard
from gentok.data.views import TrainViews, eval_view

N, SIDE, CLASSES = 16, 12, 2  # 16 square images of 12 px, 2 classes; shards of 4 images


def _png(i: int) -> bytes:
    rng = np.random.default_rng(i)
    a = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    a[:4, :4] = (i, 255 - i, 7)  # a unique corner names the image (and survives area downsampling to 8 px)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _ident(x: torch.Tensor) -> int:
    """The image a whole, unflipped view of a square image came from (its top-left pixel)."""
    return int(round(float(x[0, 0, 0]) * 255))


def _write_tars(root, per_shard=4, corrupt_in=None, n=N):
    root.mkdir(parents=True, exist_ok=True)
    for s in range(n // per_shard):
        with tarfile.open(root / f"train-{s:03d}.tar", "w") as tar:
            for i in range(s * per_shard, (s + 1) * per_shard):
                members = {f"{i:05d}.png": _png(i), f"{i:05d}.cls": str(i % CLASSES).encode()}
                if corrupt_in == s and i == s * per_shard + 1:
                    members[f"{i:05d}.png"] = b"\x89PNG not really"
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    """The same 16 images as a flat folder, an ImageFolder tree, tar shards, Parquet and a save_to_disk folder."""
    root = tmp_path_factory.mktemp("forms")
    out = {}
    for i in range(N):
        (root / "flat").mkdir(exist_ok=True)
        (root / "flat" / f"{i:05d}.png").write_bytes(_png(i))
        split = "val" if i >= N - 4 else "train"
        d = root / "tree" / split / f"class{i % CLASSES}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:05d}.png").write_bytes(_png(i))
    out["folder"] = str(root / "flat")
    out["imagefolder"] = str(root / "tree")
    out["webdataset"] = str(_write_tars(root / "tars")) + "/train-{000..003}.tar"
    table = pa.table({"image": pa.array([_png(i) for i in range(N)], pa.binary()),
                      "label": pa.array([i % CLASSES for i in range(N)], pa.int64())})
    pq.write_table(table, root / "data.parquet", row_group_size=4)
    out["parquet"] = str(root / "data.parquet")
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["class0", "class1"])})
    ds = datasets.Dataset.from_dict({"image": [Image.open(io.BytesIO(_png(i))) for i in range(N)],
                                     "label": [i % CLASSES for i in range(N)]}, features=features)
    ds.save_to_disk(str(root / "hf"), num_shards=4)
    out["hf"] = str(root / "hf")
    return out


def _all_records(form_dir, form):
    layout = find_dataset(form_dir, form)
    recs = [r for s in layout.train + layout.held_out for r in read_shard(s)]
    return layout, recs


def test_forms_are_detected_and_read_the_same_images_as_the_folder(forms):
    assert {f: detect_format(d) for f, d in forms.items()} == {f: f for f in forms}
    assert image_data_form(None) == "bundled"
    folder = {_ident(p.image[:, :, :]): p.image for p in folder_photos(forms["folder"])}
    assert len(folder) == N
    for form in ("imagefolder", "webdataset", "parquet", "hf"):
        layout, recs = _all_records(forms[form], form)
        assert len(recs) == N and all(r.error is None for r in recs), form
        from gentok.data.photos import decode_image

        images = {}
        for r in recs:
            im = decode_image(r.data)
            images[_ident(im)] = im
            assert r.label == _ident(im) % CLASSES, (form, r.key)  # labels travel with their images
        assert images.keys() == folder.keys() and all(torch.equal(images[k], folder[k]) for k in folder), form
        if form in ("imagefolder", "hf"):  # class names: folder names, the ClassLabel feature
            assert layout.classes == ("class0", "class1"), form


def test_streams_yield_the_views_of_the_training_images(forms):
    views = TrainViews(8, "whole", flip=False)  # square images: one view each, the evaluation view
    folder = {_ident(p.image): eval_view(p.image, 8) for p in folder_photos(forms["folder"])}
    for form in ("imagefolder", "webdataset", "parquet", "hf"):
        train, held = default_image_data(8, forms[form], eval_length=3, scales="whole", labels=True)
        train.views = views
        layout = find_dataset(forms[form])
        n_train = sum(1 for s in layout.train for _ in read_shard(s))
        it = iter(train)
        epoch = [next(it) for _ in range(n_train)]  # one process, no workers: the first epoch
        ids = [_ident(x) for x, _ in epoch]
        assert len(set(ids)) == n_train, form  # each training image once per epoch
        assert all(torch.equal(x, folder[_ident(x)]) and y == _ident(x) % CLASSES for x, y in epoch), form
        # held out: centred views of images the stream never yields
        assert len(held) == 3 and not {_ident(held[i]) for i in range(3)} & set(ids), form
        assert all(torch.equal(held[i], folder[_ident(held[i])]) for i in range(3))
        assert set(held.sources) <= {"class0", "class1", "0", "1"}, form


def _take(stream, n, batch, rank=0, world=1, start=0):
    out = []
    for b in stream.loader(batch, rank, world, start=start):
        out.append(b)
        if len(out) == n:
            return out
    raise AssertionError("stream ended")


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_stream_gives_the_uninterrupted_batches(tmp_path, workers):
    tars = _write_tars(tmp_path / "tars", per_shard=4, corrupt_in=1, n=24)
    train, _ = default_image_data(8, str(tars), num_workers=workers, shuffle_buffer=3, color_jitter=0.1)
    full = _take(train, 14, batch=3)  # 14 batches of 3 > the 19 readable training images: crosses an epoch
    resumed = _take(train, 9, batch=3, start=5)
    assert all(torch.equal(a, b) for a, b in zip(full[5:], resumed))
    # the corrupt image was skipped (and counted) in both runs, never yielded
    assert train.skipped.value >= 1
    assert not torch.equal(full[0], full[1])


def test_ranks_and_workers_read_disjoint_shards(tmp_path):
    tars = _write_tars(tmp_path / "tars", per_shard=2, n=18)  # 9 shards: 8 train, 1 held out
    train, _ = default_image_data(8, str(tars), num_workers=2, scales="whole", shuffle_buffer=1)  # shard order
    train.views = TrainViews(8, "whole", flip=False)
    seen = {}
    for rank in (0, 1):
        batches = _take(train, 4, batch=1, rank=rank, world=2)  # 2 workers x 2 shards x 2 images... first epoch
        seen[rank] = [_ident(b[0]) for b in batches]
    # worker w of a rank gives its batches w, w + 2, ...: group the images each of the 4 readers produced
    readers = {(r, w): set(seen[r][w::2]) for r in (0, 1) for w in (0, 1)}
    shards_of = {k: {i // 2 for i in v} for k, v in readers.items()}
    assert all(len(s) == 1 for s in shards_of.values())  # each reader is inside one shard after 2 images
    all_shards = [s for v in shards_of.values() for s in v]
    assert len(set(all_shards)) == 4  # four readers, four different shards
    # over a whole epoch the four readers cover the 16 training images exactly once
    full = {r: [_ident(b[0]) for b in _take(train, 8, batch=1, rank=r, world=2)] for r in (0, 1)}
    assert sorted(full[0] + full[1]) == list(range(16))


def test_unreadable_images_are_skipped_and_counted(tmp_path, capsys):
    tars = _write_tars(tmp_path / "tars", per_shard=4, corrupt_in=0, n=12)
    with tarfile.open(tars / "train-000.tar", "a") as tar:  # a sample with no image at all
        info = tarfile.TarInfo("99999.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    train, _ = default_image_data(8, str(tars), num_workers=0, shuffle_buffer=1)  # records in shard order
    it = iter(train)
    got = [next(it) for _ in range(8)]  # 9 training records, 2 unreadable: one epoch, then the next one's first
    assert len(got) == 8 and train.skipped.value == 2
    assert "skipped unreadable image train-000.tar:00001" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least 2"):
        default_image_data(8, str(tars / "train-000.tar"))


def test_patterns_and_errors(tmp_path):
    tars = _write_tars(tmp_path / "t", per_shard=4, n=12)
    assert [p.rsplit("/", 1)[1] for p in expand_pattern(str(tars) + "/train-{000..001}.tar")] == \
        ["train-000.tar", "train-001.tar"]
    assert len(expand_pattern(str(tars) + "/*.tar")) == 3
    assert detect_format(str(tars) + "/train-00?.tar") == "webdataset"
    with pytest.raises(ValueError, match="does not exist"):
        default_image_data(8, str(tmp_path / "nothing-{0..3}.tar"))
    with pytest.raises(ValueError, match="data format must be one of"):
        default_image_data(8, str(tars), data_format="zip")
    with pytest.raises(ValueError, match="labels need"):
        default_image_data(8, labels=True)
    train, _ = default_image_data(8, str(tars))
    with pytest.raises(ValueError, match="every process needs its own shard"):
        train.loader(2, rank=0, world=3)


# -- recipes on tar shards ------------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "model.image_size=16", "--set", "model.patch_size=8", "--set", "model.num_tokens=4",
        "--set", "model.colour_tokens=1",  # of the 4 (the tiny preset has 16 of 32)
        "--set", "model.width=32", "--set", "model.enc_depth=1", "--set", "model.dec_depth=1",
        "--set", "model.heads=2", "--set", "model.refine_channels=4", "--set", "train.batch_size=4",
        "--set", "train.eval_every=0", "--set", "train.warmup_steps=2"]


def _run(cmd, expect=0):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == expect, (r.returncode, r.stdout[-3000:] + r.stderr[-3000:])
    return r.stdout + r.stderr


def test_titok_recipe_on_tar_shards_resumes_exactly(tmp_path):
    shards = _write_tars(tmp_path / "tars", per_shard=4, corrupt_in=2, n=24)
    data = ["--data", str(shards) + "/train-{000..005}.tar", "--data-workers", "2", "--shuffle-buffer", "5"]
    tiny = [*TINY, *data, "--max-steps", "8", "--set", "train.checkpoint_every=3"]
    runner = str(ROOT / "tests" / "scripts" / "run_recipe.py")
    a, resumed = tmp_path / "a", tmp_path / "resumed"
    _run([sys.executable, runner, "recipes/titok.py", "--kill-at-micro", "5", "--output-dir", str(resumed), *tiny],
         expect=-9)
    log = _run([sys.executable, runner, "recipes/titok.py", "--output-dir", str(a), *tiny,
                "--then", "--output-dir", str(resumed), *tiny])
    assert "at step 3" in log and "unreadable record(s) skipped" in log
    assert (a / "model" / "model.safetensors").read_bytes() == (resumed / "model" / "model.safetensors").read_bytes()
    losses = [[(r["step"], r["train/loss"]) for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())
               if "train/loss" in r] for d in (a, resumed)]
    assert losses[0] == losses[1] and len(losses[0]) >= 1


def test_titok_recipe_on_tar_shards_with_two_processes(tmp_path):
    shards = _write_tars(tmp_path / "tars", per_shard=4, n=24)
    out = tmp_path / "ddp"
    _run(["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", "recipes/titok.py", "--output-dir", str(out),
          "--data", str(shards), "--data-workers", "1", "--max-steps", "3", *TINY])
    meta = json.loads((out / "checkpoints" / "step-00000003" / "metadata.json").read_text())
    assert meta["num_processes"] == 2 and (out / "model" / "model.safetensors").is_file()
    assert json.loads((out / "eval.json").read_text())["images"] == 4  # the held-out shard's 4 images


def test_audio_folders_and_tar_shards_read_the_same_clips(tmp_path):
    import soundfile as sf

    from gentok.data.audio import default_audio_data, user_clips

    rng = np.random.default_rng(0)
    waves = [rng.uniform(-0.5, 0.5, 800 + 100 * i).astype(np.float32) for i in range(6)]
    folder = tmp_path / "wavs"
    folder.mkdir()
    for i, w in enumerate(waves):
        sf.write(folder / f"{i}.{'wav' if i % 2 else 'flac'}", w, 8000, subtype="PCM_16")
    (folder / "9.wav").write_bytes(b"RIFF broken")
    shards = tmp_path / "shards"
    shards.mkdir()
    for s in range(2):
        with tarfile.open(shards / f"a-{s}.tar", "w") as tar:
            for i in range(3 * s, 3 * s + 3):
                tar.add(folder / f"{i}.{'wav' if i % 2 else 'flac'}", arcname=f"{i:04d}.{'wav' if i % 2 else 'flac'}")
            if s == 1:
                tar.add(folder / "9.wav", arcname="0009.wav")
    a, what_a = user_clips(str(folder), 8000)
    b, what_b = user_clips(str(shards / "a-{0..1}.tar"), 8000)
    assert len(a) == len(b) == 6 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(np.abs(x - w).max() < 1e-3 for x, w in zip(a, waves))  # 16-bit files hold the waves
    assert "1 unreadable skipped" in what_a and "1 unreadable skipped" in what_b and "tar shards" in what_b
    train, held, source = default_audio_data(8000, str(shards), segment=400, train_crops=10, eval_crops=4)
    assert len(train) == 10 and train[0].shape == (400,) and "6 clips" in source


@pytest.mark.parametrize("size,patch", [(64, 16), (96, 16), (64, 8), (96, 8)])
def test_titok_trains_at_any_multiple_of_its_patch_size(size, patch):
    from gentok.tokenizers.image.titok import TiTok, TiTokConfig

    cfg = TiTokConfig(image_size=size, patch_size=patch, num_tokens=4, width=32, enc_depth=1, dec_depth=1, heads=2)
    model = TiTok(cfg)
    train, _ = default_image_data(size, train_length=2, eval_length=2)  # the bundled photographs at this size
    x = torch.stack([train[0], train[1]])
    out = model(x)
    out.loss.backward()
    assert out.recon.shape == (2, 3, size, size) and torch.isfinite(out.loss)
    assert model.decode(model.encode(x)).shape == (2, 3, size, size)


def test_a_size_off_the_patch_grid_fails_clearly():
    from gentok.tokenizers.image.titok import TiTokConfig

    with pytest.raises(ValueError, match="image_size 100 is not a multiple of patch_size 16"):
        TiTokConfig(image_size=100, patch_size=16)
    log = _run([sys.executable, "recipes/titok.py", "--set", "model.image_size=100", "--max-steps", "1"], expect=2)
    assert "image_size 100 is not a multiple of patch_size 16" in log and "Traceback" not in log


def test_encode_on_files_uses_the_evaluation_view(tmp_path):
    from gentok.data.photos import load_image
    from gentok.tokenizers.image.assets import to_image_batch

    for i, shape in enumerate([(30, 47, 3), (50, 20, 3), (10, 13, 3)]):  # wide, tall, smaller than the model size
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, shape, dtype=np.uint8)).save(path)
        image = load_image(path)
        assert torch.equal(to_image_batch([str(path)], 16)[0], eval_view(image, 16))
        whole = TrainViews(16, "whole", flip=False)(image, torch.Generator().manual_seed(0))
        assert whole.shape == eval_view(image, 16).shape == (3, 16, 16)


def test_batch_encode_reads_dataset_records_like_files(tmp_path, forms):
    from gentok.engines import encode_to_parquet, expand_inputs, read_encoded
    from gentok.tokenizers.image.titok import TiTok, TiTokConfig

    torch.manual_seed(0)
    TiTok(TiTokConfig(image_size=16, patch_size=8, num_tokens=4, width=32, enc_depth=1, dec_depth=1,
                      heads=2)).eval().save_pretrained(tmp_path / "m")
    tars = expand_inputs([forms["webdataset"]])
    assert len(tars) == N and tars[0].endswith("train-000.tar#tar:0:0")
    assert len(expand_inputs([forms["parquet"]])) == len(expand_inputs([forms["hf"]])) == N
    files = expand_inputs([forms["folder"]])
    encode_to_parquet(tmp_path / "m", files, tmp_path / "files", engine="local", batch_size=5)
    encode_to_parquet(tmp_path / "m", [forms["webdataset"]], tmp_path / "tars", engine="local", batch_size=5)
    encode_to_parquet(tmp_path / "m", [forms["hf"]], tmp_path / "hf", engine="local", batch_size=5)
    a, _ = read_encoded(tmp_path / "files")
    for out in ("tars", "hf"):  # the same images in the same order (record i is image i)
        b, sources = read_encoded(tmp_path / out)
        assert torch.equal(a.ids, b.ids) and len(sources) == N
