"""The accelerate loop: resume after a kill equals an uninterrupted run; schedules; checkpoint bookkeeping; the CPU
thread count; tracker checks; seeding in `apply_overrides`; file permissions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gentok.cli.errors import UsageError
from gentok.cli.recipe_args import apply_overrides, recipe_parser
from gentok.training import FitResult, TrainConfig, fit, latest_checkpoint, lr_at
from gentok.training import trackers
from gentok.training.fit import EpochShuffle
from gentok.training.threads import choose_num_threads
from gentok.training.trackers import requested_trackers

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


# --- threads, trackers, what fit reports and writes ---------------------------------------------------------------

LAUNCHED = {"ACCELERATE_DYNAMO_BACKEND": "no", "OMP_NUM_THREADS": "1"}  # what `accelerate launch` exports by default
LAUNCHER = ({}, ["python", "-m", "accelerate.commands.launch", "train.py"])  # its own start environment and argv


@pytest.mark.parametrize("requested, env, parent, expected", [
    # the launcher imposed OMP_NUM_THREADS=1: the cores, shared by the processes on this machine
    (0, LAUNCHED, LAUNCHER, 8),
    (0, {**LAUNCHED, "LOCAL_WORLD_SIZE": "3"}, LAUNCHER, 2),
    (0, {**LAUNCHED, "LOCAL_WORLD_SIZE": "16"}, LAUNCHER, 1),
    (0, {"TORCHELASTIC_RUN_ID": "x", "OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "2"}, LAUNCHER, 4),
    (0, LAUNCHED, None, 8),  # no /proc: an inherited 1 under a launcher is the launcher's default
    # the user chose: their OMP_NUM_THREADS (even 1) or --num_cpu_threads_per_process stands
    (0, LAUNCHED, ({"OMP_NUM_THREADS": "1"}, LAUNCHER[1]), None),
    (0, {**LAUNCHED, "OMP_NUM_THREADS": "3"}, ({}, ["accelerate", "launch", "--num_cpu_threads_per_process", "3"]),
     None),
    (0, LAUNCHED, ({}, ["accelerate", "launch", "--num_cpu_threads_per_process=1", "x.py"]), None),
    (0, {"OMP_NUM_THREADS": "1"}, LAUNCHER, None),  # no launcher: plain `OMP_NUM_THREADS=1 python recipe.py`
    (0, {}, LAUNCHER, None),  # PyTorch's default
    # explicit gentok settings win over everything
    (0, {**LAUNCHED, "GENTOK_NUM_THREADS": "5"}, LAUNCHER, 5),
    (0, {"OMP_NUM_THREADS": "2", "GENTOK_NUM_THREADS": "1"}, LAUNCHER, 1),
    (6, {**LAUNCHED, "GENTOK_NUM_THREADS": "5"}, LAUNCHER, 6),
])
def test_thread_count_undoes_only_the_launcher_default(requested, env, parent, expected):
    n, reason = choose_num_threads(requested, env=env, parent=parent, cores=8)
    assert n == expected, reason


def test_bad_thread_settings_are_rejected():
    with pytest.raises(ValueError, match="GENTOK_NUM_THREADS must be a positive integer"):
        choose_num_threads(0, env={"GENTOK_NUM_THREADS": "many"}, parent=LAUNCHER, cores=8)
    with pytest.raises(ValueError, match="num_threads"):
        TrainConfig(num_threads=-1)


def test_missing_or_unknown_tracker_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(trackers, "get_available_trackers", lambda: [])
    assert requested_trackers("") is None
    with pytest.raises(ValueError, match=r"'tensorboard' but its package is not installed: pip install tensorboard"):
        requested_trackers("tensorboard")
    with pytest.raises(ValueError, match="unknown tracker 'tensorbord'"):
        requested_trackers("tensorbord")
    # fit stops before any work; a recipe exits with the one line, no traceback
    with pytest.raises(ValueError, match="pip install tensorboard"):
        fit(torch.nn.Linear(2, 2), [torch.zeros(2)] * 4, TrainConfig(output_dir=str(tmp_path), log_with="tensorboard"))
    assert not tmp_path.joinpath("checkpoints").exists()
    args = recipe_parser("x", {"p": None}, "p", str(tmp_path)).parse_args(["--set", "train.log_with=tensorboard"])
    with pytest.raises(UsageError, match="^train.log_with asks for 'tensorboard'.*pip install tensorboard"):
        apply_overrides(TrainConfig(), TrainConfig(), args)


def test_apply_overrides_seeds_before_the_model_is_built(tmp_path):
    # (a TrainConfig stands in for the model config: any config dataclass does)
    args = recipe_parser("x", {"p": None}, "p", str(tmp_path)).parse_args(["--seed", "7"])
    weights = []
    for _ in range(2):
        torch.rand(5)  # whatever state the process was in
        _, train_cfg = apply_overrides(TrainConfig(), TrainConfig(), args)
        weights.append(torch.nn.Linear(4, 4).weight.detach().clone())
    assert train_cfg.seed == 7 and torch.equal(weights[0], weights[1])


def test_fit_reports_main_process_and_writes_plain_permissions(tmp_path, capsys):
    from gentok.data.images import default_image_data
    from gentok.quantizers import VQConfig
    from gentok.tokenizers.image.titok import TiTok, TiTokConfig

    old = os.umask(0o022)
    try:
        torch.manual_seed(0)
        model = TiTok(TiTokConfig(image_size=16, patch_size=8, num_tokens=4, width=32, enc_depth=1, dec_depth=1,
                                  heads=2, quantizer=VQConfig(dim=8, codebook_size=32)))
        train, _ = default_image_data(16, eval_length=8, train_length=8)
        result = fit(model, train, TrainConfig(output_dir=str(tmp_path), max_steps=2, batch_size=4, ema_decay=0.5,
                                               checkpoint_every=1, warmup_steps=1, num_threads=1))
    finally:
        os.umask(old)
    assert isinstance(result, FitResult) and result.is_main_process and result.step == 2
    assert "1 CPU thread per process (train.num_threads)" in capsys.readouterr().out
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "ema.safetensors" for p in files) and any(p.parent.name == "model" for p in files)
    assert {p.relative_to(tmp_path).as_posix(): oct(p.stat().st_mode & 0o777) for p in files} == \
        {p.relative_to(tmp_path).as_posix(): "0o644" for p in files}
