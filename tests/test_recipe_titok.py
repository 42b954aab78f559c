"""`recipes/titok.py` end to end: one process, resume after rerun, and two processes under accelerate launch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gentok

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "model.width=32", "--set", "model.enc_depth=1", "--set", "model.dec_depth=1",
        "--set", "model.heads=2", "--set", "model.refine_channels=4", "--set", "train.batch_size=4",
        "--set", "train.checkpoint_every=2", "--set", "train.eval_every=0", "--set", "train.warmup_steps=1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(cmd):
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=420, env=ENV)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


def test_recipe_runs_and_resumes(tmp_path):
    out = tmp_path / "run"
    log = _run([sys.executable, "recipes/titok.py", "--output-dir", str(out), "--max-steps", "4", *TINY])
    assert "held-out" in log and "PSNR" in log
    for name in ("model/config.json", "model/model.safetensors", "metrics.jsonl", "eval.json", "reconstructions.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "eval.json").read_text())
    assert report["bits_per_image"] == 288 and report["images"] == 256
    assert 0 < report["psnr"] < 60 and 0 < report["baseline_psnr"] < 60
    tok = gentok.load(out / "model")
    assert tok.config.width == 32
    # a rerun with a longer budget resumes from the step-4 checkpoint instead of starting over
    log = _run([sys.executable, "recipes/titok.py", "--output-dir", str(out), "--max-steps", "6", *TINY])
    assert "resuming from" in log and "at step 4" in log
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 6


def test_recipe_two_processes(tmp_path):
    out = tmp_path / "ddp"
    _run(["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", "recipes/titok.py", "--output-dir", str(out),
          "--max-steps", "3", *TINY])
    assert (out / "model" / "model.safetensors").is_file()
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "train/loss" in r]
    assert max(steps) == 3 and len(steps) == len(set(steps)), steps  # logged once (main process), not once per rank
    meta = json.loads((out / "checkpoints" / "step-00000003" / "metadata.json").read_text())
    assert meta["num_processes"] == 2  # the two processes trained together, not side by side


def test_ddp_keeps_codebooks_identical():
    log = _run(["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "tests/scripts/ddp_vq.py"])
    assert "DDP-OK" in log and "MISMATCH" not in log
