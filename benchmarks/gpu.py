"""GPU check of the paper presets: a few hundred mixed-precision training steps of each, with items/s, peak memory,
the loss trend and a checkpoint resumed.

Each preset (TiTok L-32 / B-64 / S-128, FlexTok d12-d12, the 24 kHz audio codec, MergeDNA base, RAR-B once gentok has
it) trains in bf16 autocast on the GPU from a fixed pool of real items: views of the bundled photographs, generated
speech-like and music-like clips, windows of the genome bundled with `pyrodigal` (a random sequence without it),
Markov-chain token sequences for generators. Batch s is a pure function of (seed, s). A preset stops after --steps
steps or when its wall-clock budget (--budget-s) is spent, whichever comes first. Mid-run the model and optimizer are
saved with `accelerate`'s `save_state`; after the run a model built from other random weights loads that checkpoint
and retrains the steps that followed it, and its losses must equal the uninterrupted run's (exactly on a CPU in
float32; within --resume-tol in bf16 on a GPU, where some kernels are not bitwise deterministic). A preset that fails
is recorded with its error and the run goes on; one whose module gentok lacks is "skipped: not available". The
JSON is rewritten after every preset, so a run cut short keeps what it measured.

    python -m benchmarks.gpu                    # all presets on the GPU (about 5 minutes on one H200)
    python -m benchmarks.gpu --only titok --budget-s 60
    python -m benchmarks.gpu --tiny             # the same code on each family's tiny preset, on the CPU (seconds)
"""

from __future__ import annotations

import datetime
import functools
import gc
import importlib
import math
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from benchmarks.common import parser, print_table, write_json


@dataclass(frozen=True)
class Spec:
    """One row of the check: which model, at which size, on what data."""

    name: str
    family: str  # a key of FAMILIES: how the data is made and the loss read
    module: str  # defines the model class and its PRESETS; a module gentok lacks makes the row "skipped"
    preset: str  # the paper's size (GPU run)
    batch: int  # items per step on the GPU
    lr: float
    tracked: str = "loss"  # the metric whose trend says the model learns (the total loss may hold GAN terms)
    tiny: str = "tiny"  # the CPU preset (--tiny)
    overrides: tuple = ()  # (field, value) pairs replaced in the preset's config


SPECS = (
    Spec("TiTok L-32", "image", "gentok.tokenizers.image.titok", "L-32", 32, 1e-4, "recon_loss"),
    Spec("TiTok B-64", "image", "gentok.tokenizers.image.titok", "B-64", 64, 2e-4, "recon_loss"),
    Spec("TiTok S-128", "image", "gentok.tokenizers.image.titok", "S-128", 64, 2e-4, "recon_loss"),
    Spec("FlexTok d12-d12", "image", "gentok.tokenizers.image.flextok", "d12-d12", 32, 1e-4, "flow_loss"),
    Spec("Codec 24 kHz", "audio", "gentok.tokenizers.audio.codec", "24khz", 16, 3e-4, "mel_loss"),
    Spec("MergeDNA base", "dna", "gentok.tokenizers.dna.mergedna", "base", 16, 3e-4, "recon_loss"),
    Spec("RAR-B", "generator", "gentok.generators.rar", "rar_b", 64, 4e-4),
)
TINY_BATCH, TINY_LR = 4, 1e-3


@dataclass
class Settings:
    """How a run trains; `settings()` fills it from the command line."""

    device: str  # "cuda" or "cpu"
    precision: str  # accelerate's mixed_precision: "bf16" or "no"
    tiny: bool
    steps: int
    budget_s: float
    warmup: int  # steps left out of the throughput (compilation of kernels, allocator growth)
    save_at: int  # the checkpoint is written after this many steps
    check: int = 2  # steps retrained after loading: the first tests the weights, the second the optimizer state
    resume_tol: float = 5e-3
    seed: int = 0
    pool: int = 512  # items per family drawn once, on the device
    batch: int | None = None  # None: each spec's own (TINY_BATCH with --tiny)
    ckpt_dir: str | None = None
    progress: bool = True
    lr_warmup: int = 20


# -- data: a pool of items on the device ----------------------------------------------------------------------------
class Pool:
    """Fixed training items on the device; batch s is a pure function of (seed, s), so the resumed run trains on
    the very batches the uninterrupted one did. The batches' indices are drawn up front and live on the device too,
    so taking a batch never waits for the GPU."""

    def __init__(self, tensors: tuple, batch: int, seed: int, steps: int, device):
        self.tensors = tuple(t.to(device) for t in tensors)
        n = len(tensors[0])
        self.index = torch.stack([torch.randint(n, (batch,), generator=torch.Generator().manual_seed(
            seed * 1_000_003 + step)) for step in range(steps)]).to(device)  # (steps, batch)

    def __call__(self, step: int) -> tuple:
        idx = self.index[step]
        return tuple(t[idx] for t in self.tensors)


@functools.lru_cache(maxsize=4)
def _image_views(size: int, n: int, seed: int) -> torch.Tensor:
    """(n, 3, size, size) training views of the bundled photographs, with the image recipes' scales and jitter."""
    from gentok.cli.data_args import RECIPE_COLOR_JITTER, RECIPE_SCALES
    from gentok.data.datasets import MultiScaleCrops
    from gentok.data.photos import bundled_photos

    train, _ = bundled_photos()
    views = MultiScaleCrops(train, size, n, seed=seed, scales=RECIPE_SCALES, color_jitter=RECIPE_COLOR_JITTER)
    return torch.stack([views[i] for i in range(n)])


def image_data(model, s: Settings):
    size = model.config.image_size
    return (_image_views(size, s.pool, s.seed),), f"{s.pool} views of the bundled photographs at {size} px", \
        f"{size}px image"


def audio_data(model, s: Settings):
    from gentok.data.audio import AudioCrops, synthetic_clips

    c = model.config
    seconds = 0.1 if s.tiny else 1.0
    segment = max(int(seconds * c.sample_rate), max(c.mel_windows))
    segment = math.ceil(segment / c.hop) * c.hop
    clips = synthetic_clips(16 if s.tiny else 48, 2 * segment / c.sample_rate, c.sample_rate, s.seed)
    crops = AudioCrops(clips, segment, s.pool, seed=s.seed)
    wav = torch.stack([crops[i] for i in range(s.pool)])
    return (wav,), f"{s.pool} crops of {len(clips)} generated speech/music-like clips", \
        f"{segment / c.sample_rate:g} s clip @ {c.sample_rate // 1000} kHz"


def dna_data(model, s: Settings):
    from gentok.data.dna import GenomeWindows, format_bases, load_genomes, split_genomes

    length = model.config.seq_len
    try:
        regions = split_genomes(load_genomes(), min_len=2 * length).train
        source = f"the genome bundled with pyrodigal ({format_bases(sum(len(r) for r in regions))} trained on)"
    except ValueError:  # pyrodigal is not installed
        regions = [np.random.default_rng(s.seed).integers(0, 4, 1 << 21).astype(np.uint8)]
        source = "a random sequence (pyrodigal is not installed)"
    windows = GenomeWindows(regions, length, s.pool, seed=s.seed)
    return (torch.stack([windows[i] for i in range(s.pool)]),), f"{s.pool} windows of {source}", \
        f"{length}-base window"


def token_data(model, s: Settings):
    """Sequences of a sparse random Markov chain (4 successors per token, a class-dependent first token): structure a
    generator can learn, entropy floor log 4 per token."""
    vocab, length = model.vocab_size, model.seq_len
    classes = max(int(getattr(model.config, "num_classes", 0) or 0), 1)
    rng = np.random.default_rng(s.seed)
    successors = rng.integers(0, vocab, size=(vocab, 4))
    labels = rng.integers(0, classes, s.pool)
    ids = np.empty((s.pool, length), dtype=np.int64)
    ids[:, 0] = (labels * 7919) % vocab
    for t in range(1, length):
        ids[:, t] = successors[ids[:, t - 1], rng.integers(0, 4, s.pool)]
    return (torch.from_numpy(ids), torch.from_numpy(labels)), \
        f"{s.pool} Markov-chain sequences over {vocab} tokens", f"{length}-token sequence"


def tokenizer_loss(model, batch: tuple, tracked: str):
    out = model(batch[0])
    return out.loss, out.metrics.get(tracked, out.loss)


def generator_loss(model, batch: tuple, tracked: str):
    """Next-token cross entropy; the class label goes in as `cond` when the model is class-conditional."""
    ids, labels = batch
    conditional = bool(getattr(model.config, "num_classes", 0))
    logits = model(ids, cond=labels) if conditional else model(ids)
    n = ids.shape[1]
    if logits.shape[1] == n + 1:  # the last row predicts the token after the sequence
        logits = logits[:, :-1]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids.reshape(-1))
    return loss, loss.detach()


FAMILIES = {  # family -> (data, loss)
    "image": (image_data, tokenizer_loss),
    "audio": (audio_data, tokenizer_loss),
    "dna": (dna_data, tokenizer_loss),
    "generator": (token_data, generator_loss),
}


# -- one preset -----------------------------------------------------------------------------------------------------
def build(spec: Spec, s: Settings) -> torch.nn.Module:
    """A fresh model of the spec's preset (ModuleNotFoundError when gentok lacks the spec's module)."""
    from gentok.config import replace as replace_config

    module = importlib.import_module(spec.module)
    name = spec.tiny if s.tiny else spec.preset
    presets = getattr(module, "PRESETS", {})
    if name not in presets:
        raise ValueError(f"{spec.module} has no preset {name!r}; it has {sorted(presets)}")
    cfg = replace_config(presets[name], **dict(spec.overrides)) if spec.overrides else presets[name]
    classes = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
               and getattr(v, "config_class", None) is type(cfg)]
    if not classes:
        raise ValueError(f"{spec.module} defines no model class for {type(cfg).__name__}")
    return classes[0](cfg)


class Trainer:
    """A model of `spec` built from `init_seed` and its AdamW under one `Accelerator` (bf16 autocast on the GPU)."""

    def __init__(self, spec: Spec, s: Settings, init_seed: int, lr: float):
        self.spec, self.s, self.lr = spec, s, lr
        self.acc = Accelerator(cpu=s.device == "cpu", mixed_precision=s.precision)
        set_seed(init_seed)
        model = build(spec, s)
        self.params = sum(p.numel() for p in model.parameters())
        decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
        rest = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                                lr=lr, betas=(0.9, 0.95), fused=True)
        self.model, self.opt = self.acc.prepare(model, opt)
        self.model.train()

    def step(self, pool: Pool, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on batch `step`; all randomness is a pure function of (seed, step, rank). Returns the
        (loss, tracked metric) as device tensors (reading them would wait for the GPU)."""
        s = self.s
        set_seed(s.seed * 1_000_003 + step * 8_191 + self.acc.process_index * 131_071)
        loss, tracked = FAMILIES[self.spec.family][1](self.model, pool(step), self.spec.tracked)
        self.acc.backward(loss)
        self.acc.clip_grad_norm_(self.model.parameters(), 1.0)
        for g in self.opt.param_groups:
            g["lr"] = self.lr * min(1.0, (step + 1) / s.lr_warmup)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach(), torch.as_tensor(tracked).detach()

    def close(self) -> None:
        """Give the GPU memory back before the next model is built (on the CPU there is nothing to gain, and a full
        garbage collection after importing torch would cost most of a tiny run)."""
        self.model = self.opt = None
        if self.s.device == "cuda":
            self.acc.free_memory()  # drops its references to model and optimizer, collects, empties the cache


def _sync(s: Settings) -> None:
    if s.device == "cuda":
        torch.cuda.synchronize()


def _checkpoint_dir(s: Settings, params: int) -> str | None:
    """--ckpt-dir, else /dev/shm when it holds the checkpoint twice over (so a GPU box's disk does not decide the
    save and load times), else the temp dir."""
    if s.ckpt_dir or not Path("/dev/shm").is_dir():
        return s.ckpt_dir
    need = params * 4 * 3 * 2  # float32 weights + two Adam moments, twice over
    return "/dev/shm" if shutil.disk_usage("/dev/shm").free > need else None


def run_preset(spec: Spec, s: Settings) -> dict:
    """Train one preset and check its resume; the row of the result table (errors propagate to the caller)."""
    t_start = time.perf_counter()
    lr = TINY_LR if s.tiny else spec.lr
    batch = s.batch or (TINY_BATCH if s.tiny else spec.batch)
    if s.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run = Trainer(spec, s, s.seed, lr)
    tensors, data, item = FAMILIES[spec.family][0](run.model, s)
    pool = Pool(tensors, batch, s.seed * 31 + run.acc.process_index, s.steps, run.acc.device)
    root = Path(tempfile.mkdtemp(prefix="gentok-gpu-", dir=_checkpoint_dir(s, run.params)))
    bar = tqdm(total=s.steps, desc=spec.name, disable=not s.progress, dynamic_ncols=True,
               mininterval=1.0 if sys.stderr.isatty() else 15.0)
    out, save_s, t_fast, stopped_by = [], 0.0, None, "steps"
    try:
        t_train = time.perf_counter()
        for step in range(s.steps):
            if step == s.warmup:
                _sync(s)
                t_fast = time.perf_counter()  # throughput counts from here on
            if step == s.save_at:
                _sync(s)
                t = time.perf_counter()
                run.acc.save_state(str(root / "state"), safe_serialization=True)
                save_s = time.perf_counter() - t
            out.append(run.step(pool, step))
            bar.update(1)
            if (time.perf_counter() - t_train - save_s > s.budget_s and len(out) >= s.save_at + s.check
                    and len(out) > s.warmup + 1):
                stopped_by = "budget"
                break
        _sync(s)
        t_end = time.perf_counter()
        bar.close()
        losses, tracked = (torch.stack(col).float().cpu().tolist() for col in zip(*out))
        peak = torch.cuda.max_memory_allocated() / 2**30 if s.device == "cuda" else None
        timed, procs = len(losses) - s.warmup, run.acc.num_processes
        elapsed = t_end - t_fast - (save_s if s.save_at >= s.warmup else 0.0) if t_fast is not None else 0.0
        items_per_s = timed * batch * procs / elapsed if timed > 0 and elapsed > 0 else None
        ckpt_mib = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20
        params = run.params
        run.close()
        del run
        resume = check_resume(spec, s, root / "state", losses[s.save_at:s.save_at + s.check], pool, lr)
    finally:
        bar.close()
        shutil.rmtree(root, ignore_errors=True)
    k = max(1, min(10, len(losses) // 2))  # first / last k steps
    first, last = float(np.mean(losses[:k])), float(np.mean(losses[-k:]))
    tr_first, tr_last = float(np.mean(tracked[:k])), float(np.mean(tracked[-k:]))
    return {
        "status": "ok", "params": params, "batch": batch, "item": item, "data": data, "steps": len(losses),
        "stopped_by": stopped_by, "lr": lr, "items_per_s": items_per_s,
        "step_ms": 1000 * batch * procs / items_per_s if items_per_s else None,
        "peak_mem_gib": peak, "loss_first": first, "loss_last": last, "loss_down": last < first,
        "tracked": spec.tracked, "tracked_first": tr_first, "tracked_last": tr_last, "tracked_down": tr_last < tr_first,
        "losses": losses, "resume": {**resume, "saved_after_step": s.save_at, "checkpoint_mib": ckpt_mib,
                                     "save_s": save_s, "dir": str(root.parent)},
        "train_s": t_end - t_train, "seconds": time.perf_counter() - t_start,
    }


def check_resume(spec: Spec, s: Settings, ckpt: Path, expected: list[float], pool: Pool, lr: float) -> dict:
    """Build the model from other random weights, load the mid-run checkpoint and retrain the steps that followed
    it: their losses must match the uninterrupted run's (`expected`)."""
    run = Trainer(spec, s, s.seed + 12_345, lr)  # other initial weights: only the checkpoint can match the losses
    t = time.perf_counter()
    run.acc.load_state(str(ckpt))
    load_s = time.perf_counter() - t
    got = [float(run.step(pool, s.save_at + i)[0]) for i in range(len(expected))]
    run.close()
    worst = max((abs(a - b) / max(abs(b), 1e-8) for a, b in zip(got, expected)), default=math.inf)
    return {"losses_uninterrupted": expected, "losses_resumed": got, "max_rel_diff": worst,
            "tolerance": s.resume_tol, "ok": len(got) == s.check and worst <= s.resume_tol, "load_s": load_s}


def run_row(spec: Spec, s: Settings) -> dict:
    """`run_preset` with failures recorded: a module gentok lacks -> skipped, any other error -> the error."""
    row = {"name": spec.name, "family": spec.family, "module": spec.module,
           "preset": spec.tiny if s.tiny else spec.preset}
    try:
        row.update(run_preset(spec, s))
    except ModuleNotFoundError as e:
        if e.name and (spec.module == e.name or spec.module.startswith(e.name + ".")):
            row.update(status="skipped", reason="skipped: not available")
        else:
            row.update(status="error", error=f"{type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001 - one preset's failure must not end the check
        row.update(status="error", error=f"{type(e).__name__}: {e}"[:2000])
    if s.device == "cuda":  # whatever a failed preset left behind
        gc.collect()
        torch.cuda.empty_cache()
    return row


# -- the run ----------------------------------------------------------------------------------------------------------
def header(s: Settings) -> dict:
    gpu = torch.cuda.get_device_name(0) if s.device == "cuda" else None
    return {"benchmark": "gpu", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": gpu or "cpu", "gpus": torch.cuda.device_count() if s.device == "cuda" else 0,
            "torch": torch.__version__, "cuda": torch.version.cuda, "settings": asdict(s)}


def summary(rows: list[dict]) -> None:
    table = []
    for r in rows:
        res = r.get("resume", {})
        table.append({
            "preset": r["name"], "status": r["status"] if r["status"] != "error" else "ERROR",
            "params (M)": r["params"] / 1e6 if "params" in r else None, "batch": r.get("batch"),
            "steps": r.get("steps"), "items/s": r.get("items_per_s"), "peak GiB": r.get("peak_mem_gib"),
            "loss first -> last": f"{r['loss_first']:.4g} -> {r['loss_last']:.4g}" if "loss_first" in r else None,
            "tracked first -> last": (f"{r['tracked']} {r['tracked_first']:.4g} -> {r['tracked_last']:.4g}"
                                      if "tracked_first" in r else None),
            "resume": (("ok" if res["ok"] else "FAIL") + f" ({res['max_rel_diff']:.1e})") if res else None,
            "s": r.get("seconds")})
    print_table(table, list(table[0]), title="\nGPU check (items/s after warm-up; losses: mean of the first / last "
                                             "10 steps; resume: max relative loss difference)")
    for r in rows:
        if r["status"] != "ok":
            print(f"  {r['name']}: {r.get('error') or r.get('reason')}")


def settings(args) -> Settings:
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else ("cpu" if args.tiny else None)
    if device is None or (device == "cuda" and not torch.cuda.is_available()):
        print("benchmarks.gpu: no CUDA GPU is visible to torch "
              f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). This check measures the paper presets "
              "on a GPU; run it on a machine with one, or pass --tiny (tiny presets, CPU) to exercise the code.",
              file=sys.stderr)
        raise SystemExit(2)
    precision = args.precision or ("bf16" if device == "cuda" else "no")
    tiny = args.tiny
    steps = args.steps or (8 if tiny else 300)
    save_at = args.save_at if args.save_at is not None else (3 if tiny else 10)
    warmup = 1 if tiny else 5
    if steps < save_at + 2:
        raise SystemExit(f"--steps {steps} leaves no room for the resume check after step {save_at} (--save-at)")
    return Settings(device=device, precision=precision, tiny=tiny, steps=steps, budget_s=args.budget_s,
                    warmup=min(warmup, steps - 1), save_at=save_at, seed=args.seed,
                    pool=args.pool or (32 if tiny else 512), batch=args.batch,
                    ckpt_dir=args.ckpt_dir, progress=not args.quiet, lr_warmup=2 if tiny else 20,
                    resume_tol=args.resume_tol if args.resume_tol is not None else
                    (1e-6 if device == "cpu" and precision == "no" else 5e-3))


def main(argv=None, specs=SPECS) -> dict:
    p = parser(__doc__, out="gpu.json")
    p.add_argument("--tiny", action="store_true", help="each family's tiny preset, a handful of steps (CPU)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--precision", default=None, choices=("bf16", "no"),
                   help="autocast dtype (default: bf16 on a GPU, float32 on the CPU)")
    p.add_argument("--steps", type=int, default=None, help="most steps per preset (default 300; --tiny 8)")
    p.add_argument("--budget-s", type=float, default=25.0,
                   help="wall-clock training budget per preset, checkpoint save excluded (default %(default)s)")
    p.add_argument("--save-at", type=int, default=None, help="save the checkpoint after this many steps (10; tiny 3)")
    p.add_argument("--resume-tol", type=float, default=None,
                   help="largest relative loss difference of the resumed run (default 1e-6 float32 CPU, else 5e-3)")
    p.add_argument("--only", action="append", default=[], help="run presets whose name contains this (repeatable)")
    p.add_argument("--batch", type=int, default=None, help="items per step for every preset (default: each its own)")
    p.add_argument("--pool", type=int, default=None, help="training items drawn per preset (default 512; --tiny 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-dir", default=None, help="where the mid-run checkpoints go (default: the temp dir)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    s = settings(args)
    if s.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the float32 parts (quantizer math): as every trainer runs them
        torch.backends.cudnn.allow_tf32 = True
    chosen = [sp for sp in specs if not args.only or any(o.lower() in sp.name.lower() for o in args.only)]
    if not chosen:
        raise SystemExit(f"--only {args.only} matches none of {[sp.name for sp in specs]}")
    result = {**header(s), "rows": []}
    for spec in chosen:
        result["rows"].append(run_row(spec, s))
        write_json(args.out, result)  # after every preset: a run cut short keeps what it measured
    summary(result["rows"])
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
