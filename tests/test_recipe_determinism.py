"""A real recipe (TiTok, tiny) is reproducible: the same command twice gives byte-identical weights, a run SIGKILLed
mid-training and rerun ends byte-identical too, and under `accelerate launch` on a CPU it trains on the machine's
cores unless the user chose a thread count."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from gentok.training.threads import cpu_cores

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "tests" / "scripts" / "run_recipe.py"
# 16x16 images, one block each side: a step takes milliseconds, so the process start dominates
TINY = ["--set", "model.image_size=16", "--set", "model.patch_size=8", "--set", "model.num_tokens=4",
        "--set", "model.colour_tokens=1",  # of the 4 (the tiny preset has 16 of 32)
        "--set", "model.width=32", "--set", "model.enc_depth=1", "--set", "model.dec_depth=1",
        "--set", "model.heads=2", "--set", "model.refine_channels=4", "--set", "train.batch_size=4",
        "--set", "train.eval_every=0", "--set", "train.warmup_steps=2"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GENTOK_NUM_THREADS")}
    return {**env, **extra}


def _run(cmd, env, expect=0):
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == expect, (r.returncode, r.stdout[-3000:] + r.stderr[-3000:])
    return r.stdout + r.stderr


def _weights(out: Path) -> bytes:
    """The final model.safetensors, byte for byte (gentok writes a canonical header)."""
    return (out / "model" / "model.safetensors").read_bytes()


def _losses(out: Path) -> list:
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]


def test_same_command_twice_and_killed_then_resumed_are_byte_identical(tmp_path):
    one_thread = _env(OMP_NUM_THREADS="1")
    tiny = [*TINY, "--max-steps", "8", "--set", "train.checkpoint_every=3"]
    a, b, resumed = tmp_path / "a", tmp_path / "b", tmp_path / "resumed"
    # killed while training step 6 (micro-batch 5): the step-3 checkpoint is complete, steps 4-5 are lost
    _run([sys.executable, str(RUNNER), "recipes/titok.py", "--kill-at-micro", "5", "--output-dir", str(resumed),
          *tiny], one_thread, expect=-9)
    assert not (resumed / "model").exists()
    assert [d.name for d in (resumed / "checkpoints").iterdir()] == ["step-00000003"]
    # two fresh runs, then the rerun of the killed one, all in one new process: each run starts from the global
    # RNG state the previous one left behind, so equal weights prove the recipe seeds before building its model
    log = _run([sys.executable, str(RUNNER), "recipes/titok.py", "--output-dir", str(a), *tiny,
                "--then", "--output-dir", str(b), *tiny, "--then", "--output-dir", str(resumed), *tiny], one_thread)
    assert "at step 3" in log
    assert _weights(a) == _weights(b) == _weights(resumed)
    assert _losses(a) == _losses(b) == _losses(resumed) and len(_losses(a)) >= 1


def _threads_reported(log: str) -> int:
    found = re.findall(r"(\d+) CPU threads? per process", log)
    assert found, log[-3000:]
    return int(found[-1])


def test_accelerate_launch_on_cpu_uses_the_cores_unless_the_user_chose(tmp_path):
    # the README's command (no accelerate config, no --cpu), under which accelerate exports OMP_NUM_THREADS=1; the
    # recipe is stopped (SIGKILL) at its first micro-batch, after `fit` printed its header
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", str(RUNNER), "recipes/titok.py",
              "--kill-at-micro", "0", *TINY, "--max-steps", "1"]
    env = _env(HF_HOME=str(tmp_path / "hf"))  # no user accelerate config
    log = _run([*launch, "--output-dir", str(tmp_path / "auto")], env, expect=1)
    assert _threads_reported(log) == cpu_cores()
    # the user's own OMP_NUM_THREADS wins, even when it equals accelerate's default
    log = _run([*launch, "--output-dir", str(tmp_path / "user")], {**env, "OMP_NUM_THREADS": "1"}, expect=1)
    assert _threads_reported(log) == 1 and "(OMP_NUM_THREADS=1)" in log
