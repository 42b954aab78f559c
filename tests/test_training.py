"""The accelerate loop: resume after a kill equals an uninterrupted run; schedules; checkpoint bookkeeping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gentok.training import TrainConfig, latest_checkpoint, lr_at
from gentok.training.fit import EpochShuffle

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"


def _run(out, *extra):
    return subprocess.run([sys.executable, str(SCRIPT), str(out), *extra], capture_output=True, text=True, timeout=300)


def test_resume_after_kill_is_bit_identical(tmp_path):
    full = _run(tmp_path / "full")
    assert full.returncode == 0, full.stderr[-2000:]
    killed = _run(tmp_path / "resumed", "--die-at", "17")  # mid-way through step 9 (2 micro-batches per step)
    assert killed.returncode == 3
    assert latest_checkpoint(tmp_path / "resumed") is not None
    assert not (tmp_path / "resumed" / "model").exists()
    again = _run(tmp_path / "resumed")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from" in again.stdout + again.stderr
    a = load_file(tmp_path / "full" / "model" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the metrics log reads like one run: every step logged once, same losses
    la = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(l) for l in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r.get("train/loss")) for r in la] == [(r["step"], r.get("train/loss")) for r in lb]


def test_incomplete_checkpoints_are_ignored(tmp_path):
    root = tmp_path / "checkpoints"
    for step, complete in ((3, True), (6, True), (9, False)):
        d = root / f"step-{step:08d}"
        d.mkdir(parents=True)
        if complete:
            (d / "metadata.json").write_text(json.dumps({"step": step}))
    assert latest_checkpoint(tmp_path).name == "step-00000006"
    assert latest_checkpoint(tmp_path / "nowhere") is None


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(max_steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(100, cfg) == pytest.approx(0.1)


def test_epoch_shuffle_is_a_function_of_seed_and_epoch():
    s = EpochShuffle(50, seed=3)
    s.set_epoch(2)
    first = list(s)
    assert sorted(first) == list(range(50))
    s.set_epoch(1)
    assert list(s) != first
    s.set_epoch(2)
    assert list(s) == first


def test_train_config_validation():
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="fp8")
    with pytest.raises(ValueError):
        TrainConfig(max_steps=0)
