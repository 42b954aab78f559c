"""The training-loop configuration shared by every recipe."""

from __future__ import annotations

from gentok.config import config


@config
class TrainConfig:
    output_dir: str = "outputs/run"
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 16  # per process, per micro-batch
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 1e-4  # applied to matrices only, not to norms, biases or 1-d parameters
    betas: tuple[float, float] = (0.9, 0.99)
    clip_grad: float = 1.0  # 0 disables
    mixed_precision: str = "no"  # "no", "bf16" or "fp16"
    ema_decay: float = 0.0  # 0 disables EMA weights; otherwise the final model carries the EMA
    eval_every: int = 200  # steps; 0 disables periodic eval (a final eval still runs when eval data is given)
    checkpoint_every: int = 200  # steps; 0 disables intermediate checkpoints
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    log_with: str = ""  # accelerate tracker name(s), comma separated ("tensorboard", "wandb", ...); "" = jsonl only
    find_unused_parameters: bool = True  # DDP: families with optional paths (nested dropout, masks) need it
    progress: bool = True
    num_threads: int = 0  # CPU threads per process; 0 = automatic (GENTOK_NUM_THREADS, else gentok/training/threads.py)

    def __post_init__(self):
        if self.max_steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("max_steps, batch_size and grad_accum must all be >= 1")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.lr <= 0 or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError("lr must be > 0 and min_lr_ratio in [0, 1]")
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0 (0 = automatic), got {self.num_threads}")
