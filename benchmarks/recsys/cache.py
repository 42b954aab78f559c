"""Model scores saved beside a benchmark run (`--work`), so the cold-start and zero-shot calibrations can be redone
(`--reuse-scores`) without retraining: score matrices as safetensors, the training record as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from safetensors.torch import load_file
from torch import Tensor

from gentok.files import atomic_write_bytes, atomic_write_json, safetensors_bytes


def cached_scores(path: Path, reuse: bool,
                  run: Callable[[], tuple[dict[str, Tensor], dict]]) -> tuple[dict[str, Tensor], dict]:
    """`run()` -> (named score matrices, training info), saved under `path`; with `reuse`, an earlier run's saved
    result is read back instead of running again (when both of its files are there)."""
    scores, info = path / "scores.safetensors", path / "info.json"
    if reuse and scores.is_file() and info.is_file():
        print(f"reusing the model scores in {path}", flush=True)
        return load_file(str(scores)), json.loads(info.read_text())
    tensors, record = run()
    atomic_write_bytes(scores, safetensors_bytes({k: v.contiguous() for k, v in tensors.items()}))
    atomic_write_json(info, record)
    return tensors, record
