"""Exponential moving average of parameters, saved as safetensors (never pickled) inside training checkpoints."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from safetensors.torch import load_file, save
from torch import nn

from gentok.files import atomic_write_bytes


class EMA:
    """Shadow copy of a model's floating-point parameters. The effective decay warms up as
    min(decay, (1 + t) / (10 + t)) so short runs are not dominated by the random initialisation."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.step = 0
        self.shadow = {k: p.detach().clone().float() for k, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.step += 1
        d = min(self.decay, (1 + self.step) / (10 + self.step))
        for k, p in model.named_parameters():
            if k in self.shadow:
                self.shadow[k].lerp_(p.detach().float(), 1.0 - d)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for k, p in model.named_parameters():
            if k in self.shadow:
                p.copy_(self.shadow[k].to(p.dtype))

    @contextmanager
    def swapped_in(self, model: nn.Module):
        """Temporarily load the EMA weights into `model` (for evaluation)."""
        backup = {k: p.detach().clone() for k, p in model.named_parameters() if k in self.shadow}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for k, p in model.named_parameters():
                    if k in backup:
                        p.copy_(backup[k])

    def save(self, path) -> None:
        data = save({k: v.contiguous() for k, v in self.shadow.items()}, metadata={"step": str(self.step)})
        atomic_write_bytes(path, data)  # the permissions a plain open() gives, never a half-written file

    def load(self, path) -> None:
        from safetensors import safe_open

        tensors = load_file(str(path))
        if set(tensors) != set(self.shadow):
            raise ValueError(f"EMA file {path} does not match the model's parameters")
        self.shadow = {k: v.float() for k, v in tensors.items()}
        with safe_open(str(path), "pt") as f:
            self.step = int(f.metadata()["step"])
