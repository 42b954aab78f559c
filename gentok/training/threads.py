"""How many CPU threads a training process uses, and why.

`accelerate launch` (and `torchrun` with several processes) exports `OMP_NUM_THREADS=1` to the script unless the
user set it or passed `--num_cpu_threads_per_process`, so on a CPU the README's quick-start command would train on
one thread however many cores the machine has. `choose_num_threads` undoes only that launcher default:

1. `TrainConfig.num_threads` (`--set train.num_threads=N`) when > 0;
2. else the environment variable `GENTOK_NUM_THREADS`;
3. else, under a launcher that imposed `OMP_NUM_THREADS` (the launcher's own environment lacked it and its command
   line has no `--num_cpu_threads_per_process`): the cores this process may use, divided by the processes on this
   machine (`LOCAL_WORLD_SIZE`), at least 1;
4. else PyTorch's own choice stands (the user's `OMP_NUM_THREADS`, or PyTorch's default of the physical cores).

The launcher's environment and command line are read from `/proc/<parent>/environ` and `/proc/<parent>/cmdline`
(the environment a process started with, not later changes); where `/proc` is missing, an inherited value of 1
under a launcher is taken to be the launcher's default (set `GENTOK_NUM_THREADS=1` to really mean one thread).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch

ENV_VAR = "GENTOK_NUM_THREADS"
LAUNCHER_FLAG = "--num_cpu_threads_per_process"
# set by `accelerate launch` in every process it starts, and by torchrun (torch elastic)
LAUNCHER_MARKERS = ("ACCELERATE_DYNAMO_BACKEND", "TORCHELASTIC_RUN_ID")


def cpu_cores() -> int:
    """Physical cores this process may use: PyTorch's default, capped by the CPU affinity mask (containers, taskset)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        usable = os.cpu_count() or 1
    try:
        import psutil  # an accelerate dependency

        physical = psutil.cpu_count(logical=False) or usable
    except ImportError:
        physical = usable
    return max(1, min(usable, physical))


def _parent_launch() -> tuple[Mapping[str, str], Sequence[str]] | None:
    """(environment the parent process started with, its command line), or None where /proc cannot tell."""
    ppid = os.getppid()
    try:
        with open(f"/proc/{ppid}/environ", "rb") as f:
            env = dict(item.split("=", 1) for item in f.read().decode(errors="replace").split("\0") if "=" in item)
        with open(f"/proc/{ppid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return None
    return env, argv


def _positive(value: str, source: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{source} must be a positive integer, got {value!r}")
    return n


def choose_num_threads(requested: int = 0, env: Mapping[str, str] | None = None,
                       parent: tuple[Mapping[str, str], Sequence[str]] | None | str = "auto",
                       cores: int | None = None) -> tuple[int | None, str]:
    """The CPU thread count for this process and the reason, following the rules in the module docstring.

    Args:
        requested: `TrainConfig.num_threads`; > 0 wins over everything.
        env: this process's environment (default `os.environ`).
        parent: the launcher's (start environment, argv); "auto" reads /proc, None means unknown.
        cores: the usable cores (default `cpu_cores()`).
    Returns:
        `(n, reason)`; `n` is None when PyTorch's current setting should stand.
    """
    env = os.environ if env is None else env
    if requested > 0:
        return requested, "train.num_threads"
    if env.get(ENV_VAR):
        return _positive(env[ENV_VAR], ENV_VAR), ENV_VAR
    imposed = env.get("OMP_NUM_THREADS")
    under_launcher = any(k in env for k in LAUNCHER_MARKERS)
    if under_launcher and imposed is not None:
        parent = _parent_launch() if parent == "auto" else parent
        if parent is None:
            launcher_default = imposed.strip() == "1"
        else:
            parent_env, parent_argv = parent
            launcher_default = "OMP_NUM_THREADS" not in parent_env and not any(
                a == LAUNCHER_FLAG or a.startswith(LAUNCHER_FLAG + "=") for a in parent_argv)
        if launcher_default:
            local = _positive(env.get("LOCAL_WORLD_SIZE", "1"), "LOCAL_WORLD_SIZE")
            cores = cpu_cores() if cores is None else cores
            return max(1, cores // local), (f"{cores} cores / {local} process{'es' if local > 1 else ''}, "
                                             f"replacing the launcher's OMP_NUM_THREADS={imposed}")
    if imposed is not None:
        return None, f"OMP_NUM_THREADS={imposed}"
    return None, "PyTorch default"


def apply_num_threads(requested: int = 0) -> tuple[int, str]:
    """Set `torch.set_num_threads` as `choose_num_threads` decides; returns (threads now in use, reason).
    Idempotent: recipes call it before building data and models, `fit` again for direct library users."""
    n, reason = choose_num_threads(requested)
    if n is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return torch.get_num_threads(), reason
