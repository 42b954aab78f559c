"""`fit`: the one accelerate training loop every recipe uses.

prepare -> for each micro-batch: accumulate / backward / clip / step -> EMA -> log -> periodic eval -> checkpoint
(`save_state` + `metadata.json`, written last so a killed save is never resumed from) -> final `save_pretrained`.
A rerun with the same output directory resumes from the newest complete checkpoint and, on CPU with a fixed seed,
ends with bit-identical parameters to an uninterrupted run: the data order is a pure function of (seed, epoch) and
the RNG states travel with the checkpoint. A rerun with a larger `max_steps` continues the run; one with a smaller
`max_steps` than the checkpoint's step is refused with a `ValueError` saying what to do (the weights are already past
that step, trained on the longer learning-rate schedule, so neither "done" nor silently training on would be true).
(Recipes seed the global RNGs before they build the model, in
`gentok.cli.recipe_args.apply_overrides`; a library caller seeds before building its model for the same promise.)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, GradientAccumulationPlugin, set_seed
from torch import Tensor, nn
from accelerate.data_loader import DataLoaderShard
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from gentok.config import to_dict
from gentok.files import atomic_write_bytes, atomic_write_json, plain_file_mode
from gentok.training.config import TrainConfig
from gentok.training.ema import EMA
from gentok.training.threads import apply_num_threads
from gentok.training.trackers import requested_trackers

LossFn = Callable[[nn.Module, object], tuple[Tensor, dict]]
EvalFn = Callable[[nn.Module, DataLoader], dict]
METADATA = "metadata.json"


@dataclass
class FitResult:
    model: nn.Module  # unwrapped, with EMA weights when EMA is on
    step: int
    eval_metrics: dict = field(default_factory=dict)
    train_metrics: dict = field(default_factory=dict)
    seconds: float = 0.0
    # whether this process is the main one: recipes report and save only there, without asking accelerate again
    is_main_process: bool = True


class EpochShuffle(Sampler[int]):
    """A permutation of range(n) that depends only on (seed, epoch): the data position is (epoch, batch index)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def default_loss(model: nn.Module, batch) -> tuple[Tensor, dict]:
    """For models whose forward returns an object with `.loss` and `.metrics` (tokenizers)."""
    out = model(batch)
    return out.loss, out.metrics


def default_eval(model: nn.Module, loader: DataLoader, loss_fn: LossFn = default_loss) -> dict:
    """Mean of the loss and metrics over the eval loader, in eval mode without gradients."""
    totals: dict[str, float] = {}
    count = 0
    with torch.no_grad():
        for batch in loader:
            loss, metrics = loss_fn(model, batch)
            for k, v in {"loss": loss, **metrics}.items():
                totals[k] = totals.get(k, 0.0) + float(v)
            count += 1
    return {k: v / max(count, 1) for k, v in totals.items()}


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to `lr`, then cosine decay to `lr * min_lr_ratio` at `max_steps`."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(cfg.max_steps - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _param_groups(model: nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint under `output_dir/checkpoints` whose `metadata.json` exists (i.e. finished saving)."""
    root = Path(output_dir) / "checkpoints"
    best, best_step = None, -1
    if root.is_dir():
        for d in root.iterdir():
            meta = d / METADATA
            if meta.is_file():
                try:
                    step = int(json.loads(meta.read_text())["step"])
                except (ValueError, KeyError, json.JSONDecodeError):
                    continue
                if step > best_step:
                    best, best_step = d, step
    return best


def fit(
    model: nn.Module,
    train_data: Dataset,
    config: TrainConfig,
    eval_data: Dataset | None = None,
    loss_fn: LossFn = default_loss,
    eval_fn: EvalFn | None = None,
    collate_fn: Callable | None = None,
    run_config: dict | None = None,
) -> FitResult:
    """Train `model` on `train_data` under accelerate; see the module docstring.

    Args:
        model: an `nn.Module` (with `save_pretrained` for the final save).
        train_data: a map-style dataset (batches of `config.batch_size` per process), or a stream with a
            `loader(batch_size, rank, world, start, device, collate_fn)` method (`gentok.data.streams.ImageStream`)
            giving process `rank`'s endless batches from its micro-batch `start` on.
        config: the loop's `TrainConfig`.
        eval_data: optional held-out dataset, evaluated every `config.eval_every` steps and at the end.
        loss_fn: `(model, batch) -> (loss, metrics)`; the default calls `model(batch)` and reads `.loss`/`.metrics`.
        eval_fn: `(unwrapped_model, loader) -> metrics`; the default averages `loss_fn` over the loader.
        run_config: extra JSON-able config saved in checkpoint metadata and passed to trackers.
    Returns:
        `FitResult` with the trained (unwrapped) model.
    """
    start = time.time()
    out_dir = Path(config.output_dir)
    _check_resume(out_dir, config.max_steps)
    trackers = requested_trackers(config.log_with)  # before any work: a missing package is a one-line error
    threads, threads_why = apply_num_threads(config.num_threads)
    accelerator = Accelerator(
        # without a GPU, `accelerate launch --multi_gpu` processes only join one gloo group when asked for the CPU
        cpu=not torch.cuda.is_available(),
        # an optimizer step is always exactly `grad_accum` micro-batches, even across epoch ends, so the data
        # position of step s is s * grad_accum micro-batches (what resume relies on)
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=config.grad_accum,
                                                                sync_with_dataloader=False),
        mixed_precision=config.mixed_precision,
        log_with=trackers,
        project_dir=str(out_dir),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=config.find_unused_parameters)],
    )
    set_seed(config.seed)
    if accelerator.is_main_process and config.progress:
        print(f"fit: {accelerator.num_processes} process{'es' if accelerator.num_processes > 1 else ''} on "
              f"{accelerator.device.type}, {threads} CPU thread{'s' if threads > 1 else ''} per process "
              f"({threads_why}), seed {config.seed} -> {out_dir}", flush=True)
    # a stream (gentok.data.streams) splits its shards over processes and workers and restarts at any micro-batch
    # itself, so accelerate neither shards nor skips it
    streaming = hasattr(train_data, "loader")
    if not streaming:
        if len(train_data) < config.batch_size * accelerator.num_processes:
            raise ValueError(f"train data has {len(train_data)} items, fewer than one batch per process")
        sampler = EpochShuffle(len(train_data), config.seed)
        loader = DataLoader(train_data, batch_size=config.batch_size, sampler=sampler, drop_last=True,
                            num_workers=config.num_workers, collate_fn=collate_fn)
    # the fused kernel is several times cheaper than per-tensor updates on CPU for small models
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr, betas=config.betas,
                                  fused=True)
    if streaming:
        model, optimizer = accelerator.prepare(model, optimizer)
    else:
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    raw = accelerator.unwrap_model(model)
    ema = EMA(raw, config.ema_decay) if config.ema_decay > 0 else None
    full_config = {"train": to_dict(config), **(run_config or {})}

    step = 0
    # sums of the metrics since the last log line; they travel with the checkpoint so the first line logged after
    # a resume averages the same micro-batches as the uninterrupted run's
    running: dict[str, float] = {}
    running_n = 0
    ckpt = latest_checkpoint(out_dir)
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        meta = json.loads((ckpt / METADATA).read_text())
        step = int(meta["step"])
        running, running_n = dict(meta.get("running", {})), int(meta.get("running_n", 0))
        if ema is not None:
            ema.load(ckpt / "ema.safetensors")
        accelerator.print(f"resuming from {ckpt} at step {step}")
    metrics_path = out_dir / "metrics.jsonl"
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        _truncate_jsonl(metrics_path, step)
        accelerator.init_trackers("gentok", config=_flat(full_config))

    micro = step * config.grad_accum  # micro-batches consumed so far
    if streaming:  # endless: one pass of the loop below, from micro-batch `micro` on
        loader = train_data.loader(config.batch_size, accelerator.process_index, accelerator.num_processes,
                                   start=micro, device=accelerator.device, collate_fn=collate_fn)
        epoch, skip = 0, 0
    else:
        epoch, skip = divmod(micro, len(loader))
    bar = tqdm(total=config.max_steps, initial=step, disable=not (config.progress and accelerator.is_main_process),
               desc="train", dynamic_ncols=True)
    eval_metrics: dict = {}
    model.train()
    while step < config.max_steps:
        # accelerate's loaders re-seat the sampler's epoch from their own counter on every __iter__
        epoch_loader = accelerator.skip_first_batches(loader, skip) if skip else loader
        if not streaming:
            epoch_loader.set_epoch(epoch)
        skip = 0
        for batch in epoch_loader:
            # model randomness (dropout, masking, code restarts) is a pure function of (seed, micro-batch, rank), so
            # a resumed run draws exactly what the uninterrupted one did, however its data iterators were created
            torch.manual_seed(_micro_seed(config.seed, micro, accelerator.process_index))
            micro += 1
            with accelerator.accumulate(model):
                loss, metrics = loss_fn(model, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {float(loss)} at step {step}; lower lr or check the data")
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.clip_grad > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.clip_grad)
                for g in optimizer.param_groups:
                    g["lr"] = lr_at(step, config)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            for k, v in {"loss": loss, **metrics}.items():
                running[k] = running.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
            running_n += 1
            if not accelerator.sync_gradients:
                continue
            step += 1
            if ema is not None:
                ema.update(raw)
            bar.update(1)
            if step % config.log_every == 0 or step == config.max_steps:
                logs = {f"train/{k}": v / running_n for k, v in running.items()}
                logs["lr"] = lr_at(step - 1, config)
                bar.set_postfix(loss=f"{logs['train/loss']:.4f}")
                _log(accelerator, metrics_path, step, logs)
                running, running_n = {}, 0
            if eval_data is not None and config.eval_every and step % config.eval_every == 0 and step < config.max_steps:
                eval_metrics = _evaluate(accelerator, raw, ema, eval_data, config, loss_fn, eval_fn, collate_fn)
                _log(accelerator, metrics_path, step, {f"eval/{k}": v for k, v in eval_metrics.items()})
                model.train()
            # the last step is always checkpointed, so a rerun with a larger --max-steps continues from the end
            if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == config.max_steps:
                _save_checkpoint(accelerator, out_dir, step, ema, full_config, config.keep_checkpoints,
                                 {"running": running, "running_n": running_n})
            if step >= config.max_steps:
                break
        epoch += 1
    bar.close()

    if eval_data is not None:
        eval_metrics = _evaluate(accelerator, raw, ema, eval_data, config, loss_fn, eval_fn, collate_fn)
        _log(accelerator, metrics_path, step, {f"eval/{k}": v for k, v in eval_metrics.items()})
    if ema is not None:
        ema.copy_to(raw)
    raw.eval()
    if accelerator.is_main_process and hasattr(raw, "save_pretrained"):
        raw.save_pretrained(out_dir / "model")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    seconds = time.time() - start
    if accelerator.is_main_process and config.progress:
        _summary(out_dir, step, seconds, eval_metrics)
    return FitResult(raw, step, eval_metrics, {}, seconds, is_main_process=accelerator.is_main_process)


def _check_resume(out_dir: Path, max_steps: int) -> None:
    """Refuse to resume a run whose newest checkpoint is past `max_steps` (before any work starts)."""
    ckpt = latest_checkpoint(out_dir)
    if ckpt is None:
        return
    step = int(json.loads((ckpt / METADATA).read_text())["step"])
    if step > max_steps:
        raise ValueError(f"{out_dir} already holds a run trained to step {step}, past max_steps {max_steps}: rerun "
                         f"with --max-steps {step} or more to continue it, or choose a new --output-dir (or delete "
                         f"{out_dir / 'checkpoints'}) to train {max_steps} steps from scratch")


def _evaluate(accelerator, raw, ema, eval_data, config, loss_fn, eval_fn, collate_fn) -> dict:
    """Evaluate the unwrapped model (EMA weights if on) on the main process; no collective runs inside the model."""
    result: dict = {}
    if accelerator.is_main_process:
        # batches arrive on the model's device (a DataLoader that only places them: no sharding, the main process
        # evaluates the whole held-out set)
        loader = DataLoaderShard(eval_data, device=accelerator.device, batch_size=config.batch_size, shuffle=False,
                                 collate_fn=collate_fn)
        raw.eval()
        with torch.random.fork_rng(devices=[]):  # eval randomness must not shift the training RNG stream
            if ema is not None:
                with ema.swapped_in(raw):
                    result = eval_fn(raw, loader) if eval_fn else default_eval(raw, loader, loss_fn)
            else:
                result = eval_fn(raw, loader) if eval_fn else default_eval(raw, loader, loss_fn)
        raw.train()
    accelerator.wait_for_everyone()
    return result


def _save_checkpoint(accelerator, out_dir: Path, step: int, ema, full_config: dict, keep: int, state: dict) -> None:
    root = out_dir / "checkpoints"
    path = root / f"step-{step:08d}"
    if accelerator.is_main_process and path.exists():
        shutil.rmtree(path)  # a stale, unfinished save of the same step
    accelerator.wait_for_everyone()
    accelerator.save_state(str(path), safe_serialization=True)
    if accelerator.is_main_process:
        for f in path.iterdir():  # safetensors writes 0600 files; give the mode a plain open() would
            if f.is_file():
                plain_file_mode(f)
        if ema is not None:
            ema.save(path / "ema.safetensors")
        micro = step * full_config["train"]["grad_accum"]
        atomic_write_json(path / METADATA, {"step": step, "config": full_config, **state,
                                            "num_processes": accelerator.num_processes,
                                            "data_position": {"micro_batches": micro}})
        complete = sorted((d for d in root.iterdir() if (d / METADATA).is_file()),
                          key=lambda d: json.loads((d / METADATA).read_text())["step"])
        for old in complete[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        for d in root.iterdir():  # unfinished saves left by a kill
            if d != path and not (d / METADATA).is_file():
                shutil.rmtree(d, ignore_errors=True)
    accelerator.wait_for_everyone()


def _micro_seed(seed: int, micro: int, rank: int) -> int:
    return (seed * 1_000_003 + micro * 8_191 + rank * 131_071) % (2**63 - 1)


def _log(accelerator, path: Path, step: int, logs: dict) -> None:
    accelerator.log(logs, step=step)
    if accelerator.is_main_process:
        with open(path, "a") as f:
            f.write(json.dumps({"step": step, **{k: float(v) for k, v in logs.items()}}) + "\n")


def _truncate_jsonl(path: Path, step: int) -> None:
    """On resume drop log lines written after the checkpoint, so the log reads like one uninterrupted run."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError):
            continue
    atomic_write_bytes(path, "".join(l + "\n" for l in keep).encode())


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def _summary(out_dir: Path, step: int, seconds: float, eval_metrics: dict) -> None:
    lines = [f"done: {step} steps in {seconds / 60:.1f} min -> {out_dir / 'model'}"]
    for k, v in sorted(eval_metrics.items()):
        lines.append(f"  eval/{k:<20} {v:.4f}")
    print("\n".join(lines))
