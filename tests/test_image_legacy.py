"""Image model directories saved before the one-contract redesign (tests/fixtures/legacy, written by
tests/scripts/make_legacy_fixtures.py) still load with `gentok.load` and give the ids they gave then, although the
encoder half now lives in the shared `LatentEncoder` (old flat parameter names are mapped on load)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import gentok

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy"


@pytest.fixture(scope="module")
def expected():
    return load_file(str(LEGACY / "expected.safetensors"))


@pytest.mark.parametrize("family", ["titok", "flextok", "binary"])
def test_legacy_directory_loads_and_gives_the_same_ids(family, expected):
    model = gentok.load(LEGACY / family)
    tokens = model.encode(expected["images"])
    assert torch.equal(tokens.ids, expected[family])
    # the old flat names are gone from the loaded model: it saves in the new layout, which loads back unchanged
    state = model.state_dict()
    assert "encoder.latents" in state and "enc_pos" not in state and "registers" not in state
    again = type(model)(model.config)
    again.load_state_dict(state)
    assert torch.equal(again.eval().encode(expected["images"]).ids, expected[family])


def test_legacy_names_map_inside_a_wrapping_module():
    """The renaming respects the prefix a wrapper adds (as a training checkpoint of a wrapped model has)."""
    model = gentok.load(LEGACY / "flextok")
    old = load_file(str(LEGACY / "flextok" / "model.safetensors"))
    assert "registers" in old and "enc_pos" in old  # the fixture really holds the old flat names
    wrapper = torch.nn.ModuleDict({"tok": type(model)(model.config)})
    missing, unexpected = wrapper.load_state_dict({f"tok.{k}": v for k, v in old.items()}, strict=False)
    assert not missing and not unexpected
    for k, v in model.state_dict().items():
        assert torch.equal(wrapper["tok"].state_dict()[k], v), k
