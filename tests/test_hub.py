"""Save/load: JSON configs, safetensors weights, one registry, clear errors for bad checkpoints."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gentok
from gentok.checkpoint import CheckpointError, registered_models
from gentok.config import from_dict, parse_override, replace, to_dict
from gentok.files import atomic_write_bytes
from gentok.quantizers import FSQConfig, VQConfig
from gentok.tokenizers.image.titok import TiTok, TiTokConfig


def tiny_titok(**kw):
    base = dict(image_size=16, patch_size=8, num_tokens=4, width=32, enc_depth=1, dec_depth=1, heads=2,
                quantizer=VQConfig(dim=8, codebook_size=32))
    base.update(kw)
    return TiTok(TiTokConfig(**base))


def test_config_round_trip_nested():
    cfg = TiTokConfig(quantizer=FSQConfig(dim=5, levels=(4, 4, 4, 4, 4)), num_tokens=7)
    d = json.loads(json.dumps(to_dict(cfg)))
    assert from_dict(d) == cfg
    assert replace(cfg, **{"quantizer.dim": 3, "width": 64}).quantizer.dim == 3
    assert parse_override(cfg, "quantizer.levels", "8,5,5") == (8, 5, 5)
    with pytest.raises(ValueError, match="no field"):
        replace(cfg, nope=1)
    with pytest.raises(ValueError, match="unknown config class"):
        from_dict({"_class": "os.system"})


def test_registry_entries_are_consistent(monkeypatch):
    """Every declared type names its class and config class (models are built and reloaded in their own tests)."""
    from checkout_entry_points import use_checkout_entry_points

    use_checkout_entry_points(monkeypatch)  # the types this checkout declares (tests/checkout_entry_points.py)
    models = registered_models()
    assert {"titok", "quantizer.vq", "quantizer.fsq", "quantizer.lfq", "recsys.sasrec"} <= set(models)
    for name, cls in models.items():
        assert cls.model_type == name and cls.config_class is not None


def test_load_imports_only_the_module_of_the_checkpoint_type(tmp_path):
    """Loading a TiTok leaves diffusers, transformers and recsys unimported (a fresh interpreter)."""
    tiny_titok().save_pretrained(tmp_path / "m")
    code = ("import sys, gentok; gentok.load(sys.argv[1]); "
            "print(sorted(m for m in ('diffusers', 'transformers', 'recsys') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m")], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_gentok_never_names_recsys():
    root = Path(gentok.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if "recsys" in p.read_text()]
    assert not offenders, offenders


def test_written_files_get_plain_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        tiny_titok().save_pretrained(tmp_path / "m")
    finally:
        os.umask(umask)
    for p in (tmp_path / "a.bin", tmp_path / "m" / "config.json", tmp_path / "m" / "model.safetensors"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


def test_save_load_identity(tmp_path):
    torch.manual_seed(0)
    m = tiny_titok().eval()
    m.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["type"] == "titok" and meta["format_version"] == 1
    r = gentok.load(tmp_path / "m")
    assert isinstance(r, TiTok) and r.config == m.config
    for k, v in m.state_dict().items():
        assert torch.equal(v, r.state_dict()[k]), k
    assert not list((tmp_path / "m").glob("*.tmp"))  # atomic writes leave nothing behind


def test_missing_truncated_foreign_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        gentok.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        gentok.load(tmp_path / "empty")
    m = tiny_titok()
    m.save_pretrained(tmp_path / "m")
    w = tmp_path / "m" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: len(w.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        gentok.load(tmp_path / "m")
    # a checkpoint of another model type
    from gentok.quantizers import build_quantizer

    build_quantizer(VQConfig(dim=4, codebook_size=8)).save_pretrained(tmp_path / "q")
    with pytest.raises(CheckpointError, match="not a 'titok'"):
        TiTok.from_pretrained(tmp_path / "q")
    # a foreign JSON (e.g. a transformers config) and an unknown type
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    with pytest.raises(CheckpointError, match="not a gentok config"):
        gentok.load(tmp_path / "hf")
    meta = json.loads((tmp_path / "q" / "config.json").read_text())
    meta["type"] = "mystery"
    (tmp_path / "q" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unknown model type"):
        gentok.load(tmp_path / "q")
    (tmp_path / "q" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        gentok.load(tmp_path / "q")


def test_weights_that_do_not_match_the_config(tmp_path):
    tiny_titok().save_pretrained(tmp_path / "a")
    tiny_titok(width=64).save_pretrained(tmp_path / "b")
    (tmp_path / "a" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError):
        gentok.load(tmp_path / "a")


def test_hub_id_offline_fails_at_once_naming_the_local_alternative(tmp_path):
    code = ("import gentok\ntry:\n    gentok.load('someone/tokenizer_that_is_not_cached')\n"
            "except gentok.CheckpointError as e:\n    print(e)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, timeout=60)
    assert "not in the local Hugging Face cache" in out.stdout and "local directory" in out.stdout


def test_foreign_snapshots_without_safetensors_or_converter_are_refused(tmp_path):
    from gentok.pretrained.convert import safetensors_files

    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="pickle"):
        safetensors_files(tmp_path / "p")
    (tmp_path / "p" / "config.json").write_text(json.dumps({"architectures": ["Mystery"]}))
    with pytest.raises(CheckpointError, match="no converter recognises it"):
        gentok.load(tmp_path / "p")
