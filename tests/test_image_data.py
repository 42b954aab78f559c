"""Image data: the bundled photographs held out by source, multi-scale views, determinism, user folders."""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gentok.cli.data_args import add_data_arguments, data_options, describe_data
from gentok.data.datasets import HeldOutViews, MultiScaleCrops
from gentok.data.images import default_image_data
from gentok.data.photos import (MATPLOTLIB_PHOTOS, SKIMAGE_EVAL, SKIMAGE_TRAIN, SKLEARN_PHOTOS, Photo, bundled_photos,
                                split_by_source)
from gentok.data.views import SCALES, format_scales, parse_scale_weights, parse_scales, view


@pytest.fixture(scope="module")
def bundled():
    return bundled_photos()


def test_bundled_hold_out_is_by_whole_photograph_and_source(bundled):
    train, held = bundled
    train_names = {p.name for p in train}
    assert train_names == set(SKIMAGE_TRAIN) | {"china", "flower"} and not train_names & {p.name for p in held}
    assert SKLEARN_PHOTOS == ("china.jpg", "flower.jpg")
    assert {p.name for p in held} == set(SKIMAGE_EVAL) | {"grace_hopper"}
    # matplotlib is a source kept entirely out of training; scikit-learn's two photographs only train
    assert {p.source for p in train} == {"scikit-image", "scikit-learn"}
    assert all(p.image.shape == (3, 427, 640) and p.image.std(dim=(1, 2)).min() > 0.05 for p in train
               if p.source == "scikit-learn")  # real colour photographs, loaded the right way round
    assert {p.source for p in held} == {"scikit-image", "matplotlib"}
    # no held-out pixels in training: every training photograph differs from every held-out one
    for h in held:
        for t in train:
            assert h.image.shape != t.image.shape or not torch.equal(h.image, t.image)
    assert MATPLOTLIB_PHOTOS == ("grace_hopper.jpg",)


def test_items_are_a_pure_function_of_seed_and_index():
    a, ha = default_image_data(32, train_length=50, eval_length=12, seed=3)
    b, hb = default_image_data(32, train_length=50, eval_length=12, seed=3)
    c, _ = default_image_data(32, train_length=50, eval_length=12, seed=4)
    for i in (0, 7, 49):
        assert torch.equal(a[i], b[i]) and a[i].shape == (3, 32, 32)
    assert torch.equal(a[7], a[7])  # reading twice changes nothing
    assert not all(torch.equal(a[i], c[i]) for i in range(10))
    assert all(torch.equal(ha[i], hb[i]) for i in range(len(ha)))
    x = torch.stack([a[i] for i in range(50)])
    assert x.min() >= 0 and x.max() <= 1
    with pytest.raises(IndexError):
        a[50]


def test_held_out_set_is_balanced_and_independent_of_training_scales():
    _, held = default_image_data(64, eval_length=40, seed=0, scales="native")
    _, same = default_image_data(64, eval_length=40, seed=0)
    assert all(torch.equal(held[i], same[i]) for i in range(40))  # every run measures on the same set
    assert len(held) == 40 and held.scales[:3] == ["whole"] * 3  # one whole view per held-out photograph first
    assert sorted(held.names[:3]) == ["coffee", "grace_hopper", "motorcycle"]
    counts = {(s, sc): 0 for s in ("scikit-image", "matplotlib") for sc in ("native", "region")}
    for s, sc in zip(held.sources[3:], held.scales[3:]):
        counts[(s, sc)] += 1
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    # a 4-item set still shows every source and the whole photographs
    _, small = default_image_data(64, eval_length=4)
    assert len(small) == 4 and set(small.sources) == {"scikit-image", "matplotlib"} and "whole" in small.scales


def test_views_at_each_scale():
    ramp = torch.linspace(0, 1, 300)
    image = torch.stack([ramp[None, :].expand(200, 300), ramp[:, None].expand(300, 200).T[:200], torch.rand(200, 300)])
    whole = view(image, 50, "whole")  # centred largest square, area-downsampled
    expected = F.interpolate(image[None, :, :, 50:250], size=(50, 50), mode="area")[0]
    assert torch.allclose(whole, expected)
    native = view(image, 50, "native", torch.Generator().manual_seed(0))
    # a native crop is an exact window of the photograph
    hits = [(y, x) for y in range(151) for x in range(251) if torch.equal(image[:, y:y + 50, x:x + 50], native)]
    assert len(hits) == 1
    region = view(image, 50, "region", torch.Generator().manual_seed(1))
    assert region.shape == (3, 50, 50)
    # a region covers more of the photograph than a native crop: its horizontal ramp spans more than 50 px' worth
    span = float(region[0, 0, -1] - region[0, 0, 0]) * 299
    assert span > 80
    with pytest.raises(ValueError, match="unknown scale"):
        view(image, 50, "huge")


def test_training_uses_only_the_chosen_scales(bundled):
    train, _ = bundled
    ds = MultiScaleCrops(train[:1], 64, length=20, seed=0, scales=("whole",), flip=False)
    whole = view(train[0].image, 64, "whole")
    assert all(torch.equal(ds[i], whole) for i in range(20))  # astronaut is square: its whole view is unique
    flipped = MultiScaleCrops(train[:1], 64, length=20, seed=0, scales=("whole",))
    seen = {torch.equal(flipped[i], whole.flip(-1)) for i in range(20)}
    assert seen == {True, False}  # flips happen, sometimes


def test_colour_augmentation(bundled):
    train, _ = bundled
    photo = [p for p in train if p.name == "astronaut"]  # a colour photograph, square: one whole view
    whole = view(photo[0].image, 64, "whole")
    plain = MultiScaleCrops(photo, 64, length=30, seed=0, scales="whole", flip=False)
    assert all(torch.equal(plain[i], whole) for i in range(30))  # off by default
    shuffled = MultiScaleCrops(photo, 64, length=60, seed=0, scales="whole", flip=False, channel_shuffle=1.0)
    perms = set()
    for i in range(60):
        x = shuffled[i]
        match = [p for p in itertools.permutations(range(3)) if torch.equal(x, whole[list(p)])]
        assert len(match) == 1  # a permutation of the view's channels, nothing else changed
        perms.add(match[0])
    assert len(perms) == 6
    half = MultiScaleCrops(photo, 64, length=200, seed=0, scales="whole", flip=False, channel_shuffle=0.5)
    assert 95 <= sum(torch.equal(half[i], whole) for i in range(200)) <= 145  # 1/2 + 1/2 * 1/6 = 58% untouched
    jit = MultiScaleCrops(photo, 64, length=40, seed=0, scales="whole", flip=False, color_jitter=0.2)
    assert torch.equal(jit[7], jit[7]) and not torch.equal(jit[7], jit[8])  # a pure function of (seed, i)
    ratios = []
    for i in range(40):
        x = jit[i]
        assert x.min() >= 0 and x.max() <= 1
        inside = (whole > 0.05) & (whole < 0.6)  # away from clamping: each channel is scaled by one gain
        gains = [float((x[c][inside[c]] / whole[c][inside[c]]).median()) for c in range(3)]
        assert max(float((x[c][inside[c]] / whole[c][inside[c]]).std()) for c in range(3)) < 0.02
        ratios.append(np.log(gains))
    assert 0.12 < float(np.std(ratios)) < 0.28
    turned = MultiScaleCrops(photo, 64, length=80, seed=0, scales="whole", flip=False, rotate=0.5)
    turns = [[k for k in range(4) if torch.equal(turned[i], whole.rot90(k, (1, 2)))] for i in range(80)]
    assert all(len(t) == 1 for t in turns)  # a quarter turn of the view, nothing else changed
    assert {t[0] for t in turns} == {0, 1, 2, 3} and 25 <= sum(t[0] == 0 for t in turns) <= 55  # 1/2 untouched
    assert torch.equal(turned[3], turned[3])
    for bad in ({"channel_shuffle": 1.5}, {"channel_shuffle": -0.1}, {"color_jitter": -1.0},
                {"color_jitter": float("nan")}, {"rotate": 1.1}, {"rotate": float("nan")}):
        with pytest.raises(ValueError, match="channel_shuffle|color_jitter|rotate"):
            MultiScaleCrops(photo, 64, length=4, **bad)


def test_data_flags(capsys):
    parser = add_data_arguments(argparse.ArgumentParser(), default="native:2,whole:1", color_jitter=0.1)
    args = parser.parse_args([])
    streaming = {"data_format": None, "shuffle_buffer": 1000, "num_workers": None}
    assert data_options(args) == {"scales": {"native": 2.0, "whole": 1.0}, "channel_shuffle": 0.0,
                                  "color_jitter": 0.1, "rotate": 0.0, "hue": 0.0, **streaming}
    assert describe_data(args)["scales"] == "native:2,whole:1"
    args = parser.parse_args(["--scales", "region", "--channel-shuffle", "0.25", "--color-jitter", "0",
                              "--rotate", "0.5", "--data-format", "webdataset", "--shuffle-buffer", "7",
                              "--data-workers", "0"])
    assert data_options(args) == {"scales": {"region": 1.0}, "channel_shuffle": 0.25, "color_jitter": 0.0,
                                  "rotate": 0.5, "hue": 0.0, "data_format": "webdataset", "shuffle_buffer": 7,
                                  "num_workers": 0}
    args.data_format = None
    train, _ = default_image_data(32, train_length=4, eval_length=2, **data_options(args))
    assert train.channel_shuffle == 0.25 and train.color_jitter == 0.0 and train.scales == ("region",)
    assert train.rotate == 0.5
    for bad in (["--channel-shuffle", "2"], ["--channel-shuffle", "x"], ["--color-jitter", "-0.1"],
                ["--color-jitter", "nan"], ["--scales", "native:0"], ["--rotate", "-1"],
                ["--shuffle-buffer", "0"], ["--data-workers", "-1"], ["--data-format", "zip"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
        err = capsys.readouterr().err
        assert "expected" in err or "must be a positive number" in err or "invalid choice" in err


def test_parse_scales():
    assert parse_scales("native, whole") == ("native", "whole")
    assert parse_scales(SCALES) == SCALES
    for bad in ("", "native,tiny"):
        with pytest.raises(ValueError, match="subset of native, region, whole"):
            parse_scales(bad)


def test_scale_weights_parse_and_steer_sampling():
    assert parse_scale_weights("native:2, region:2,whole") == {"native": 2.0, "region": 2.0, "whole": 1.0}
    assert parse_scale_weights(SCALES) == dict.fromkeys(SCALES, 1.0)
    assert parse_scales("native:3,whole:1") == ("native", "whole")
    assert format_scales({"native": 4.5, "whole": 1.0}) == "native:4.5,whole:1"
    assert format_scales(dict.fromkeys(SCALES, 1.0)) == "native,region,whole"
    for bad in ("native:0", "native:-1", "native:x", "native:nan", "native:inf"):
        with pytest.raises(ValueError, match="must be a positive number"):
            parse_scale_weights(bad)
    with pytest.raises(ValueError, match="subset of native, region, whole"):
        parse_scale_weights("tiny:2")
    train, _ = bundled_photos()
    photo = [p for p in train if p.name == "astronaut"]  # square: its whole view is one fixed image
    whole = view(photo[0].image, 64, "whole")
    ds = MultiScaleCrops(photo, 64, length=400, seed=0, scales="native:9,whole:1", flip=False)
    n_whole = sum(torch.equal(ds[i], whole) for i in range(400))
    assert 20 <= n_whole <= 65  # ~10% whole views (binomial sd 6), against ~50% unweighted
    uniform = MultiScaleCrops(photo, 64, length=400, seed=0, scales="native,whole", flip=False)
    assert 160 <= sum(torch.equal(uniform[i], whole) for i in range(400)) <= 240


def _write(path, value, size=(40, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)


def test_folder_sources_and_hold_out(tmp_path):
    for i in range(6):
        _write(tmp_path / "beach" / f"{i}.png", 10 + i)
    for i in range(2):
        _write(tmp_path / "city" / f"{i}.png", 100 + i)
    _write(tmp_path / "zoo" / "a.jpg", 200)
    train, held = default_image_data(32, str(tmp_path), train_length=30, eval_length=6, seed=0)
    # the last source (zoo) is kept entirely out; others hold out every 5th photograph (or their last)
    assert {p.name for p in held.photos} == {"beach/4.png", "city/1.png", "zoo/a.jpg"}
    assert {p.source for p in train.photos} == {"beach", "city"} and len(train.photos) == 6
    assert set(held.sources) == {"beach", "city", "zoo"}
    assert all(train[i].shape == (3, 32, 32) for i in range(30))
    # one source only: whole photographs held out, named after the folder
    flat = tmp_path / "flat"
    for i in range(3):
        _write(flat / f"{i}.png", i)
    train, held = default_image_data(16, str(flat), train_length=4, eval_length=2)
    assert [p.name for p in held.photos] == ["2.png"] and set(held.sources) == {"flat"}


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        default_image_data(16, str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="no images"):
        default_image_data(16, str(tmp_path))
    _write(tmp_path / "one.png", 5)
    with pytest.raises(ValueError, match="at least two images"):
        default_image_data(16, str(tmp_path))
    with pytest.raises(ValueError, match="at least one photograph"):
        HeldOutViews([], 16)
    with pytest.raises(ValueError, match="at least two images"):
        split_by_source([Photo("a", "s", torch.zeros(3, 8, 8))])
