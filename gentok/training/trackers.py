"""Experiment trackers named in `TrainConfig.log_with`, checked before training starts.

accelerate only logs a generic warning for a tracker whose package is missing and then trains without it, so a user
who asked for TensorBoard finds out after the run. Here a missing or misspelt tracker stops the run with one line
that names the package to install.
"""

from __future__ import annotations

from accelerate.tracking import get_available_trackers
from accelerate.utils import LoggerType


def requested_trackers(log_with: str) -> list[str] | None:
    """The tracker names in `log_with` ("tensorboard,wandb"; "" = none), for `Accelerator(log_with=...)`.

    Raises:
        ValueError: a name accelerate does not know, or a tracker whose package is not installed.
    """
    names = [t.strip().lower() for t in log_with.split(",") if t.strip()]
    known = [t.value for t in LoggerType]
    available = {str(getattr(t, "value", t)) for t in get_available_trackers()}
    for name in names:
        if name not in known:
            raise ValueError(f"train.log_with: unknown tracker {name!r}; choose from {', '.join(known)}")
        if name != LoggerType.ALL.value and name not in available:
            raise ValueError(f"train.log_with asks for {name!r} but its package is not installed: "
                             f"pip install {name}  (or drop it from train.log_with)")
    return names or None
