"""The accelerate training loop (`fit`) and its configuration."""

from gentok.training.config import TrainConfig
from gentok.training.fit import FitResult, default_eval, default_loss, fit, latest_checkpoint, lr_at

__all__ = ["TrainConfig", "fit", "FitResult", "default_loss", "default_eval", "latest_checkpoint", "lr_at"]
