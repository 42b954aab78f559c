"""`python -m benchmarks.gpu` on the CPU with tiny shapes: every preset row, finite figures, an exact resume, the JSON
schema; a broken checkpoint load fails the resume check; no GPU without --tiny exits 2."""

from __future__ import annotations

import datetime
import importlib.util
import json
import math

import pytest
import torch

from benchmarks import gpu

# the generator path (what RAR-B runs once gentok has it) on gentok's class-conditional AR model
AR = gpu.Spec("AR tiny", "generator", "gentok.generators.ar", "base", 8, 1e-3, overrides=(("num_classes", 10),))
MISSING = gpu.Spec("Missing", "image", "gentok.tokenizers.image.not_a_module", "x", 8, 1e-3)
BAD = gpu.Spec("Bad preset", "image", "gentok.tokenizers.image.titok", "Z-1", 8, 1e-3, tiny="no-such-preset")
ROW_KEYS = {"name", "family", "module", "preset", "status", "params", "batch", "item", "data", "steps", "stopped_by",
            "lr", "items_per_s", "step_ms", "peak_mem_gib", "loss_first", "loss_last", "loss_down", "tracked",
            "tracked_first", "tracked_last", "tracked_down", "losses", "resume", "train_s", "seconds"}


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "gpu.json"
    result = gpu.main(["--tiny", "--quiet", "--out", str(out)], specs=gpu.SPECS + (AR, MISSING, BAD))
    return result, json.loads(out.read_text())


def test_every_preset_has_a_row_and_the_json_matches(tiny_run):
    result, saved = tiny_run
    assert [r["name"] for r in saved["rows"]] == [s.name for s in gpu.SPECS] + ["AR tiny", "Missing", "Bad preset"]
    assert {"benchmark", "date", "device", "gpus", "torch", "cuda", "settings", "rows", "machine"} <= set(saved)
    assert saved["device"] == "cpu" and saved["gpus"] == 0 and saved["torch"] == torch.__version__
    assert saved["settings"]["tiny"] and saved["settings"]["precision"] == "no"
    datetime.datetime.fromisoformat(saved["date"])
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))  # the file holds what the run returned


def test_trained_rows_are_finite_and_resume_exactly(tiny_run):
    _, saved = tiny_run
    rows = {r["name"]: r for r in saved["rows"]}
    s = saved["settings"]
    for spec in gpu.SPECS + (AR,):
        row = rows[spec.name]
        if not _available(spec.module):  # RAR-B until gentok has it
            assert row["status"] == "skipped" and row["reason"] == "skipped: not available"
            continue
        assert row["status"] == "ok", row.get("error")
        assert ROW_KEYS <= set(row)
        assert row["preset"] == spec.tiny and row["batch"] == gpu.TINY_BATCH and row["steps"] == s["steps"] == 8
        assert row["params"] > 0 and row["peak_mem_gib"] is None  # no CUDA: no device memory to report
        for key in ("items_per_s", "step_ms", "loss_first", "loss_last", "tracked_first", "tracked_last"):
            assert math.isfinite(row[key]), (spec.name, key)
        assert row["items_per_s"] > 0 and len(row["losses"]) == 8 and all(map(math.isfinite, row["losses"]))
        res = row["resume"]
        # float32 on one CPU: the resumed run retrains the two steps after the checkpoint bit for bit
        assert res["ok"] and res["max_rel_diff"] == 0.0 and res["checkpoint_mib"] > 0
        assert res["losses_uninterrupted"] == row["losses"][s["save_at"]:s["save_at"] + 2] == res["losses_resumed"]
    # the image models and the generator learn within 8 steps at the tiny sizes
    for name in ("TiTok L-32", "FlexTok d12-d12", "AR tiny"):
        assert rows[name]["tracked_down"] and rows[name]["loss_down"], name


def test_failures_are_rows_not_crashes(tiny_run):
    _, saved = tiny_run
    rows = {r["name"]: r for r in saved["rows"]}
    assert rows["Missing"]["status"] == "skipped" and rows["Missing"]["reason"] == "skipped: not available"
    assert rows["Bad preset"]["status"] == "error" and "no-such-preset" in rows["Bad preset"]["error"]


def test_a_checkpoint_that_does_not_load_fails_the_resume_check(tmp_path, monkeypatch):
    from accelerate import Accelerator

    monkeypatch.setattr(Accelerator, "load_state", lambda self, path: None)  # the rebuilt model keeps its own weights
    out = tmp_path / "gpu.json"
    gpu.main(["--tiny", "--quiet", "--only", "TiTok S-128", "--out", str(out)])
    (row,) = json.loads(out.read_text())["rows"]
    assert row["status"] == "ok" and not row["resume"]["ok"] and row["resume"]["max_rel_diff"] > 1e-3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
@pytest.mark.parametrize("argv", [[], ["--device", "cuda"]])
def test_without_a_gpu_it_says_so_and_exits_2(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        gpu.main(argv + ["--out", str(tmp_path / "gpu.json")])
    assert e.value.code == 2 and "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "gpu.json").exists()
