"""Hue rotation and the colour report of an image tokenizer."""

from __future__ import annotations

import pytest
import torch

from gentok.data.colour import hsv_to_rgb, hue_rotate, rgb_to_hsv
from gentok.evaluation.colour import colour_errors, evaluate_colour


def _images(n=4, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_hsv_round_trip_and_rotation_group():
    x = _images()
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5)
    assert torch.allclose(hue_rotate(hue_rotate(x, 120), 240), x, atol=1e-4)
    assert torch.allclose(hue_rotate(x, 360), x)


def test_primary_colours_turn_as_expected():
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(hue_rotate(red, 120), torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2),
                          atol=1e-6)
    assert torch.allclose(hue_rotate(red, 60), torch.tensor([1.0, 1.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2),
                          atol=1e-6)  # yellow
    grey = torch.full((1, 3, 2, 2), 0.4)
    assert torch.allclose(hue_rotate(grey, 200), grey)  # no hue to turn


def test_colour_errors_see_a_grey_cast():
    green = torch.tensor([0.2, 0.8, 0.1]).view(1, 3, 1, 1).expand(2, 3, 8, 8).clone()
    same = colour_errors(green, green)
    assert same["colour_error"] == 0 and same["hue_error"] == 0 and same["pixels_green"] == 128
    greyed = green.mean(1, keepdim=True).expand_as(green) * 0.9 + green * 0.1
    bad = colour_errors(greyed, green)
    assert bad["colour_error"] > 0.1
    shifted = hue_rotate(green, -60)  # green -> yellow-ish
    assert colour_errors(shifted, green)["hue_error_green"] == pytest.approx(60, abs=1)


def test_evaluate_colour_on_a_tiny_tokenizer():
    from gentok.tokenizers.image.titok import PRESETS, TiTok

    torch.manual_seed(0)
    model = TiTok(PRESETS["tiny"]).eval()
    size = PRESETS["tiny"].image_size
    report = evaluate_colour(model, _images(3, size), rotations=(0, 180), permutations=[(0, 1, 2), (2, 1, 0)])
    assert [r["degrees"] for r in report["rotations"]] == [0, 180]
    assert [r["channels"] for r in report["permutations"]] == ["RGB", "BGR"]
    row0, perm0 = report["rotations"][0], report["permutations"][0]
    assert row0["psnr"] == pytest.approx(perm0["psnr"], abs=1e-4)  # rotation 0 == identity order
    assert len(row0["per_view_psnr"]) == 3
    with pytest.raises(ValueError, match="expected images"):
        evaluate_colour(model, torch.rand(3, 8, 8))
