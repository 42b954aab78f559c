"""Train a generator over image tokens: an any-subset AR model (default) or a plain AR model, then sample images.

    accelerate launch recipes/generator.py                        # AS-ARM on TiTok tokens of the bundled photos
    accelerate launch recipes/generator.py --model ar --tokenizer outputs/titok/model
    accelerate launch --multi_gpu --num_processes 2 recipes/generator.py
    accelerate launch recipes/generator.py --draft-for outputs/generator/model --preset tiny   # a draft for an AR
    accelerate launch recipes/generator.py --model rar --tokenizer DIR --data /data/imagenet   # RAR's architecture
    accelerate launch recipes/generator.py --init-from yucornetto/RAR --init-file rar_b.bin --tokenizer VQGAN_DIR \
        --data /data/my_classes                                     # fine-tune an official generator

Without --tokenizer it uses outputs/titok/model, training the tiny TiTok first (recipes/titok.py, a short budget)
when that does not exist. Data: the bundled photographs, or --data in any form the tokenizer recipes read (a folder,
an ImageFolder tree, tar shards, Parquet, a `save_to_disk` folder; the same data flags); --num-images training views
are tokenized once (streamed forms: the first ones of the stream) and cached as safetensors. Class labels (class
folders, `.cls` members, a label column) make the AR generator (--model ar) class-conditional (num_classes: the
class names, else the largest label + 1, or --num-classes); --unconditional ignores them. After training it writes
`samples.png` (rows: held-out images through the tokenizer / infills from half their tokens / new samples) and
`summary.json`. Rerunning with the same --output-dir resumes. With --inception-weights FILE (or --download-inception)
the summary adds gFID, Inception Score and precision/recall of --fid-samples new samples against the held-out images
(or against --fid-reference FILE.npz, e.g. ADM's VIRTUAL_imagenet256_labeled.npz: FID and IS only).

With --draft-for TARGET (a trained AR generator, or a RAR one: a gentok folder or an official file) it instead
distils a smaller *draft* for speculative sampling (AR: --preset; RAR: --draft-shape, default rar_b): the draft is
trained on KL(target || draft) of the next-token distributions (the target's logits as soft labels, `DistillLoss`)
over token data: --draft-tokens FILE (safetensors with `ids` (n, L), and `labels` (n,) for a class-conditional
target), by default the token cache this recipe wrote next to the target (TARGET/../tokens_train.safetensors), else
--num-images sequences sampled from the target (cached next to the draft, keyed by the target's weights). The
summary reports the draft's acceptance and the speed of speculative vs plain decoding. Output: <output-dir>_draft.
"""

from __future__ import annotations

import json
import runpy
import time
from pathlib import Path

import torch
from accelerate import PartialState

import gentok
from gentok.cli.data_args import add_data_arguments, data_options, describe_data
from gentok.cli.errors import UsageError, run
from gentok.cli.recipe_args import add_inception_arguments, apply_overrides, inception_options, recipe_parser
from gentok.config import replace
from gentok.data.images import default_image_data, image_data_form
from gentok.evaluation.fid import distribution_report, inception_features
from gentok.files import atomic_write_bytes, atomic_write_json
from gentok.generators import ASARM, ARTransformer, ASARMLoss, ar_loss
from gentok.generators import ar as ar_mod
from gentok.generators import asarm as asarm_mod
from gentok.generators import maskgit as maskgit_mod
from gentok.generators import rar as rar_mod
from gentok.generators.ar import DistillLoss
from gentok.generators.data import TokenRows, tokenizer_fingerprint
from gentok.generators.maskgit import MaskedGenerator, MaskGITBert, masked_token_loss
from gentok.generators.rar import RAR, rar_loss
from gentok.sampling import assd, generate, sequential, speculative
from gentok.sampling.guided import guided_generate
from gentok.sampling.maskgit import maskgit_generate
from gentok.training import TrainConfig, fit
from gentok.training.generator_data import generator_tokens

# CPU default: ~10 minutes on 2 cores for the small preset (given the tokenizer)
TRAIN = TrainConfig(max_steps=600, batch_size=64, lr=2e-3, warmup_steps=30, min_lr_ratio=0.05, weight_decay=0.05,
                    eval_every=200, checkpoint_every=100, log_every=10, clip_grad=1.0)
DEFAULT_TOKENIZER = Path("outputs/titok/model")


def ensure_tokenizer(path: str | None, steps: int, data: str | None, data_format: str | None = None) -> Path:
    """The tokenizer directory to use; trains the tiny TiTok when neither --tokenizer nor the default exists."""
    if path:
        if not (Path(path) / "config.json").is_file():
            raise UsageError(f"--tokenizer {path} is not a saved gentok model (no config.json)")
        return Path(path)
    if (DEFAULT_TOKENIZER / "config.json").is_file():
        return DEFAULT_TOKENIZER
    print(f"no tokenizer at {DEFAULT_TOKENIZER}: training the tiny TiTok for {steps} steps first")
    titok = runpy.run_path(str(Path(__file__).with_name("titok.py")), run_name="gentok_titok")
    argv = ["--max-steps", str(steps), "--output-dir", str(DEFAULT_TOKENIZER.parent)]
    titok["main"](argv + (["--data", data] if data else []) + (["--data-format", data_format] if data_format else []))
    return DEFAULT_TOKENIZER


# --model: (presets, class, training loss) of each family
FAMILIES = {"asarm": (asarm_mod.PRESETS, ASARM, None), "ar": (ar_mod.PRESETS, ARTransformer, ar_loss),
            "rar": (rar_mod.PRESETS, RAR, rar_loss), "maskgit": (maskgit_mod.PRESETS, MaskGITBert, masked_token_loss)}
FAMILY_OF = {"ASARM": "asarm", "ARTransformer": "ar", "RAR": "rar", "MaskGITBert": "maskgit", "MaskGITUViT": "maskgit"}


def load_init(args):
    """The generator --init-from names (gentok.load: a gentok folder, an official file / folder or a hub id)."""
    model = gentok.load(args.init_from, filename=args.init_file)
    if type(model).__name__ not in FAMILY_OF:
        raise UsageError(f"--init-from {args.init_from} holds a {type(model).__name__}, not a generator "
                         f"({', '.join(sorted(FAMILY_OF))})")
    return model.train()


def fine_tune_start(model, cfg, tokenizer, tokens, num_classes: int):
    """`model` (from --init-from) with `cfg` (its config after --set) checked against the token data."""
    if cfg != model.config:
        raise UsageError("--set cannot change the architecture of the generator --init-from loads")
    if model.vocab_size != tokenizer.vocab_size or model.seq_len != tokens.train_ids.shape[1]:
        raise UsageError(f"--init-from: the generator models {model.vocab_size} ids x {model.seq_len} positions, the "
                         f"tokenizer gives {tokenizer.vocab_size} ids x {tokens.train_ids.shape[1]}: pass the "
                         "tokenizer it was trained with (--tokenizer)")
    have = getattr(model.config, "num_classes", 0)
    if num_classes > have:
        raise UsageError(f"--init-from: the data has {num_classes} classes, the generator knows {have}")
    return model


def class_samples(model, cond, seed: int):
    """Samples of a class-conditional RAR / MaskGIT generator with its own sampler's published defaults."""
    if isinstance(model, RAR):
        return guided_generate(model, cond.to(next(model.parameters()).device), seed=seed)
    return maskgit_generate(model, cond.to(next(model.parameters()).device), seed=seed)


def main(argv: list[str] | None = None):
    every_preset = {name: None for presets, _, _ in FAMILIES.values() for name in presets}
    parser = recipe_parser(__doc__.split("\n\n")[0], every_preset, "small", "outputs/generator")
    parser.add_argument("--model", choices=("asarm", "ar", "rar", "maskgit"), default="asarm",
                        help="asarm (default), ar, or the architectures of the field's generators: rar (RAR's "
                             "class-conditional AR; --preset from gentok.generators.rar) or maskgit (TiTok's masked "
                             "generator; --preset from gentok.generators.maskgit)")
    parser.add_argument("--init-from", default=None, metavar="GENERATOR",
                        help="fine-tune this generator instead of training one from scratch: a gentok generator "
                             "folder, an official RAR file / folder (with --init-file NAME for a hub id or a folder "
                             "of several files) or a TiTok MaskGIT generator folder / hub id; its vocabulary and "
                             "length must match the tokenizer's tokens")
    parser.add_argument("--init-file", default=None, metavar="NAME", help="the weight file of --init-from")
    parser.add_argument("--tokenizer", default=None, help="a saved image tokenizer (default: outputs/titok/model)")
    parser.add_argument("--tokenizer-steps", type=int, default=300, help="steps when the tiny TiTok is trained here")
    add_data_arguments(parser)
    parser.add_argument("--num-images", type=int, default=8192,
                        help="training views to tokenize (streamed forms: the first ones of the stream)")
    parser.add_argument("--unconditional", action="store_true",
                        help="ignore the data's class labels (an AR generator is class-conditional when they exist)")
    parser.add_argument("--num-classes", type=int, default=None, metavar="N",
                        help="classes of a class-conditional AR generator (default: the dataset's class names, else "
                             "the largest label tokenized + 1)")
    parser.add_argument("--k", type=int, default=4, help="ASSD drafts per round when sampling")
    parser.add_argument("--samples", type=int, default=8, help="images per row of the picture")
    parser.add_argument("--draft-for", default=None, metavar="TARGET_DIR",
                        help="distil an AR draft for this trained AR generator (KL on its logits over token data)")
    parser.add_argument("--draft-tokens", default=None, metavar="FILE",
                        help="token data for --draft-for (default: the target's token cache, else its samples)")
    parser.add_argument("--draft-shape", default="rar_b", metavar="PRESET",
                        help="the draft's RAR preset when --draft-for is a RAR generator (default: rar_b)")
    add_inception_arguments(parser)
    parser.add_argument("--fid-samples", type=int, default=1000, metavar="N",
                        help="new samples for gFID when Inception weights are given (default 1000)")
    parser.add_argument("--fid-reference", default=None, metavar="FILE.npz",
                        help="gFID against these reference statistics (mu, sigma; ours or an ADM reference batch) "
                             "instead of the held-out images")
    args = parser.parse_args(argv)
    if args.fid_samples < 2:
        raise UsageError(f"--fid-samples must be >= 2, got {args.fid_samples}")
    if args.fid_reference is not None and not Path(args.fid_reference).is_file():
        raise UsageError(f"--fid-reference {args.fid_reference}: no such file")
    inception = inception_options(args)
    if args.draft_for:
        return train_draft(args, parser.get_default("output_dir"))
    init = load_init(args) if args.init_from else None
    if init is not None:
        args.model = FAMILY_OF[type(init).__name__]
    presets = FAMILIES[args.model][0]
    if args.preset not in presets:
        if args.preset != parser.get_default("preset") or init is None and args.model in ("asarm", "ar"):
            raise UsageError(f"--preset {args.preset!r} is not a {args.model} preset; choose from {sorted(presets)}")
        args.preset = "tiny"  # the recipe's default preset names an AS-ARM size; another family starts tiny
    model_cfg, train_cfg = apply_overrides(init.config if init is not None else presets[args.preset], TRAIN, args)
    out = Path(train_cfg.output_dir)

    tok_dir = ensure_tokenizer(args.tokenizer, args.tokenizer_steps, args.data, args.data_format)
    tokenizer = gentok.load(tok_dir)
    size = tokenizer.config.image_size
    streamed = image_data_form(args.data, args.data_format) not in ("bundled", "folder")
    train_images, eval_images = default_image_data(size, args.data, eval_length=256, seed=train_cfg.seed,
                                                   labels=streamed, **data_options(args))
    tag = json.dumps({"data": args.data or "skimage", "seed": train_cfg.seed, **describe_data(args)}, sort_keys=True)
    # one process tokenizes and writes the caches; the others then read them (cpu=: the state `fit` will use)
    with PartialState(cpu=not torch.cuda.is_available()).main_process_first():
        tokens = generator_tokens(tokenizer, train_images, eval_images, out, tokenizer_fingerprint(tok_dir), tag,
                                  limit=args.num_images)
    num_classes = class_count(args, tokens)
    if init is not None:
        model = fine_tune_start(init, model_cfg, tokenizer, tokens, num_classes)
    else:
        if args.model in ("rar", "maskgit") and not num_classes:
            num_classes = 1  # class-conditional architectures: unlabelled data is one class
        model_cfg = replace(model_cfg, vocab_size=tokenizer.vocab_size, seq_len=tokens.train_ids.shape[1],
                            **({"num_classes": num_classes} if num_classes else {}))
        model = FAMILIES[args.model][1](model_cfg)
    if args.model in ("rar", "maskgit"):
        num_classes = model.config.num_classes  # its class ids; unlabelled data trains class 0
    loss_fn = ASARMLoss(ramp_batches=train_cfg.max_steps // 3, start=0.5) if args.model == "asarm" else \
        FAMILIES[args.model][2]
    if args.model in ("rar", "maskgit") and not tokens.labelled:
        tokens.train_labels = torch.zeros(len(tokens.train_ids), dtype=torch.long)
        tokens.eval_labels = torch.zeros(len(tokens.eval_ids), dtype=torch.long)
    if num_classes:
        train_data = torch.utils.data.TensorDataset(tokens.train_ids, tokens.train_labels)
        eval_data = torch.utils.data.TensorDataset(tokens.eval_ids, tokens.eval_labels)
    else:
        train_data, eval_data = TokenRows(tokens.train_ids), TokenRows(tokens.eval_ids)
    result = fit(model, train_data, train_cfg, eval_data=eval_data, loss_fn=loss_fn,
                 run_config={"model": {"kind": args.model, "preset": args.preset, "tokenizer": str(tok_dir),
                                       "num_classes": num_classes, "init_from": args.init_from},
                             "data": describe_data(args)})
    if result.is_main_process:
        features = inception_features(inception["inception_weights"], inception["download_inception"],
                                      "cuda" if torch.cuda.is_available() else None)
        gfid = sample_fid(result.model, tokenizer, features, eval_images, args, num_classes) if features else None
        write_pictures(result.model, tokenizer, tokens.eval_ids, args, out, result.eval_metrics,
                       cond=tokens.eval_labels if num_classes else None, gfid=gfid)
    return result


@torch.no_grad()
def sample_fid(model, tokenizer, features, eval_images, args, num_classes: int, batch: int = 64) -> dict:
    """gFID (+ IS, precision/recall) of --fid-samples new images (classes uniform for a class-conditional model)
    against the held-out images, or the --fid-reference statistics."""
    from gentok.metrics.distribution import FeatureStats

    model.eval()
    L, n = model.config.seq_len, args.fid_samples
    g = torch.Generator().manual_seed(3)

    def samples():
        for start in range(0, n, batch):
            b = min(batch, n - start)
            # seeds, not a CPU generator: the sampler draws on the model's device
            if isinstance(model, ASARM):
                empty = torch.zeros(b, L, dtype=torch.long)
                out = assd(model, empty, empty.bool(), k=args.k, seed=1000 + start)
            elif isinstance(model, (RAR, MaskedGenerator)):
                out = class_samples(model, torch.randint(num_classes, (b,), generator=g), seed=1000 + start)
            else:
                c = torch.randint(num_classes, (b,), generator=g) if num_classes else None
                out = generate(model, L, cond=c, batch_size=b, seed=1000 + start)
            yield tokenizer.decode(out.ids.cpu()).clamp(0, 1)

    if args.fid_reference:
        report = distribution_report(features, samples(), reference=FeatureStats.load(args.fid_reference))
        against = args.fid_reference
    else:
        real = torch.stack([eval_images[i] for i in range(len(eval_images))])
        report = distribution_report(features, samples(), real=real)
        against = f"{len(real)} held-out images"
    return {"gfid": report.pop("fid"), **report, "against": against}


def class_count(args, tokens) -> int:
    """The AR generator's number of classes (0: unconditional) from the data's labels and the flags."""
    if args.num_classes is not None and (args.model == "asarm" or args.unconditional or args.num_classes < 1):
        raise UsageError("--num-classes needs --model ar, rar or maskgit, a value >= 1 and no --unconditional")
    if not tokens.labelled or args.unconditional:
        if args.num_classes:
            raise UsageError(f"--num-classes: the data ({args.data or 'the bundled photographs'}) has no class "
                             "labels (an ImageFolder tree, tar shards with .cls files, or a label column has them)")
        return 0
    if args.model == "asarm":
        print("the data has class labels; the any-subset model is unconditional, so they are not used (--model ar "
              "trains a class-conditional generator)")
        return 0
    missing = tokens.unlabelled()
    if missing:
        raise UsageError(f"--data {args.data}: {missing} tokenized image(s) have no class label; label every record "
                         "or pass --unconditional")
    found = tokens.num_classes()
    if args.num_classes is not None and args.num_classes < found:
        raise UsageError(f"--num-classes {args.num_classes}: the data has labels up to {found - 1}")
    return args.num_classes or found


@torch.no_grad()
def write_pictures(model, tokenizer, eval_ids, args, out: Path, eval_metrics: dict, cond=None,
                   gfid: dict | None = None) -> dict:

    n, L = args.samples, eval_ids.shape[1]
    real = eval_ids[:n]
    g = torch.Generator().manual_seed(0)
    keep = torch.rand(n, L, generator=g) < 0.5  # infill: half of each held-out sequence is given
    t0 = time.time()
    if isinstance(model, (RAR, MaskedGenerator)):  # class-conditional samplers: no infill row
        c = torch.zeros(n, dtype=torch.long) if cond is None else cond[:n]
        fresh = class_samples(model, c, seed=2)
        seconds = time.time() - t0
        rows, labels = [tokenizer.decode(real), tokenizer.decode(fresh.ids)], ["held-out (tokenized)",
                                                                              "new samples, same classes"]
        stats = {f"{args.model}_fresh": fresh.summary()}
        return _finish_pictures(rows, labels, stats, seconds, args, out, eval_metrics, gfid)
    if isinstance(model, ASARM):
        infill = assd(model, real, keep, k=args.k, seed=1)
        fresh = assd(model, torch.zeros(n, L, dtype=torch.long), torch.zeros(n, L, dtype=torch.bool), k=args.k, seed=2)
        base = sequential(model, torch.zeros(n, L, dtype=torch.long), torch.zeros(n, L, dtype=torch.bool), seed=2)
        stats = {"assd_k": args.k, "assd_fresh": fresh.summary(), "assd_infill": infill.summary(),
                 "sequential_fresh": base.summary()}
    else:  # an AR model infills a prefix: the first half of the tokens is given
        c = None if cond is None else cond[:n]  # a class-conditional model: the held-out images' classes
        infill = generate(model, L - L // 2, real[:, :L // 2], cond=c, seed=1)
        fresh = generate(model, L, cond=c, batch_size=len(real), seed=2)
        stats = {"ar_fresh": fresh.summary()}
    seconds = time.time() - t0
    rows = [tokenizer.decode(real), tokenizer.decode(infill.ids), tokenizer.decode(fresh.ids)]
    labels = ["held-out (tokenized)", "infill from 50% of tokens" if isinstance(model, ASARM) else
              "infill from first 50%", "new samples"]
    return _finish_pictures(rows, labels, stats, seconds, args, out, eval_metrics, gfid)


def _finish_pictures(rows, labels, stats, seconds, args, out: Path, eval_metrics: dict, gfid: dict | None) -> dict:
    from gentok.tokenizers.image.assets import save_grid

    save_grid(rows, out / "samples.png", row_labels=labels)
    summary = {"model": args.model, "eval": eval_metrics, "sampling": stats, "sampling_seconds": seconds,
               "picture": str(out / "samples.png"), "rows": labels, **({"gfid": gfid} if gfid else {})}
    atomic_write_json(out / "summary.json", summary)
    print(f"\n{args.model} generator -> {out / 'model'}")
    for k, v in sorted(eval_metrics.items()):
        print(f"  eval/{k:<12} {v:.4f}")
    for name, s in stats.items():
        if isinstance(s, dict):
            print(f"  {name:<18} " + "  ".join(f"{k}={v:.2f}" for k, v in s.items()))
    if gfid:
        print(f"  gFID               {gfid['gfid']:.2f} ({gfid['n_fake']} samples vs {gfid['against']})"
              + (f", IS {gfid['inception_score']:.2f}" if "inception_score" in gfid else ""))
    print(f"  picture            {out / 'samples.png'}  (rows: {' | '.join(labels)})")
    return summary


def train_draft(args, default_output: str):
    """Distil a draft for the generator at `args.draft_for` (see the module docstring): an AR draft of --preset for
    an AR target, a RAR of --draft-shape for a RAR target (scored without its class 10% of the time, so it can be
    guided too)."""
    from gentok.generators.rar import PRESETS as RAR_PRESETS
    from gentok.generators.rar import RAR

    target_dir = Path(args.draft_for)
    target = gentok.load(target_dir).eval()  # a gentok folder, or an official RAR file / folder
    if args.output_dir == default_output:
        args.output_dir = f"{default_output}_draft"
    tc = target.config
    if isinstance(target, ARTransformer):
        model_cfg, train_cfg = apply_overrides(ar_mod.PRESETS[args.preset], TRAIN, args)
        model_cfg = replace(model_cfg, vocab_size=tc.vocab_size, seq_len=tc.seq_len, num_classes=tc.num_classes)
        make, loss_fn, kind = ARTransformer, DistillLoss(target), "ar-draft"
    elif isinstance(target, RAR):
        if args.draft_shape not in RAR_PRESETS:
            raise UsageError(f"--draft-shape must be one of {sorted(RAR_PRESETS)}, got {args.draft_shape!r}")
        model_cfg, train_cfg = apply_overrides(RAR_PRESETS[args.draft_shape], TRAIN, args)
        model_cfg = replace(model_cfg, vocab_size=tc.vocab_size, seq_len=tc.seq_len, num_classes=tc.num_classes)
        make, loss_fn, kind = RAR, DistillLoss(target, target.null_class, cond_drop=0.1), "rar-draft"
    else:
        raise UsageError(f"--draft-for needs an AR or RAR generator (speculative sampling), got "
                         f"{type(target).__name__}")
    out = Path(train_cfg.output_dir)
    ids, labels, source = draft_data(args, target, target_dir, out, train_cfg.seed)
    held = max(1, ids.shape[0] // 20)  # 5% of the sequences score the draft's fit
    if labels is not None:
        train_data = torch.utils.data.TensorDataset(ids[held:], labels[held:])
        eval_data = torch.utils.data.TensorDataset(ids[:held], labels[:held])
    else:
        train_data, eval_data = TokenRows(ids[held:]), TokenRows(ids[:held])
    result = fit(make(model_cfg), train_data, train_cfg, eval_data=eval_data, loss_fn=loss_fn,
                 run_config={"model": {"kind": kind, "preset": args.preset if kind == "ar-draft" else args.draft_shape,
                                       "target": str(target_dir),
                                       "data": source}})
    if result.is_main_process:
        stats = draft_report(target, result.model.eval(), args.k, n=min(16, held),
                             labels=None if labels is None else labels[:held])
        atomic_write_json(out / "summary.json", {"model": kind, "target": str(target_dir), "data": source,
                                                 "eval": result.eval_metrics, "speculative": stats})
        print(f"\ndraft for {target_dir} -> {out / 'model'}")
        print("  " + "  ".join(f"{k}={v:.3g}" for k, v in stats.items()))
    return result


def draft_data(args, target, target_dir: Path, out: Path, seed: int):
    """(ids (n, L), labels (n,) or None, description) to distil on: a token file, else samples of the target."""
    from safetensors.torch import load_file

    path = Path(args.draft_tokens) if args.draft_tokens else target_dir.parent / "tokens_train.safetensors"
    tc = target.config
    if path.is_file():
        data = load_file(str(path))
        ids, labels = data.get("ids"), data.get("labels")
        if ids is None or ids.ndim != 2 or ids.shape[1] != tc.seq_len or int(ids.min()) < 0 \
                or int(ids.max()) >= tc.vocab_size:
            raise UsageError(f"{path}: expected `ids` (n, {tc.seq_len}) in [0, {tc.vocab_size}) for this target")
        if bool(tc.num_classes) != (labels is not None):
            if args.draft_tokens:
                raise UsageError(f"{path}: a {'class-conditional' if tc.num_classes else 'unconditional'} target "
                                 f"needs {'`labels` next to' if tc.num_classes else 'no `labels` with'} the ids")
        else:
            return ids.long()[:args.num_images], None if labels is None else labels.long()[:args.num_images], str(path)
    elif args.draft_tokens:
        raise UsageError(f"--draft-tokens {path} does not exist")
    if (target_dir / "config.json").is_file():
        fingerprint = tokenizer_fingerprint(target_dir)  # a hash of the saved config and weights
    else:  # an official file or folder: where it is, its size and age
        st = target_dir.stat()
        fingerprint = f"{target_dir.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    ids, labels = target_samples(target, out / "target_samples.safetensors", fingerprint, args.num_images, seed)
    return ids, labels, "target samples"


@torch.no_grad()
def target_samples(target, path: Path, fingerprint: str, n: int, seed: int, batch: int = 256):
    """(ids (n, L), class ids (n,) or None) sampled from `target` at temperature 1, cached at `path`."""
    from safetensors.torch import load_file, save

    meta = {"fingerprint": fingerprint, "n": str(n), "seed": str(seed)}
    if path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            if f.metadata() == meta:
                data = load_file(str(path))
                return data["ids"], data.get("cond")
    g = torch.Generator().manual_seed(seed)
    L, classes = target.config.seq_len, target.config.num_classes
    chunks, conds = [], []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        c = torch.randint(classes, (b,), generator=g) if classes else None
        chunks.append(generate(target, L, cond=c, batch_size=b, generator=g).ids.cpu())
        conds.append(c)
    data = {"ids": torch.cat(chunks).contiguous()}
    if classes:
        data["cond"] = torch.cat(conds).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(data, metadata=meta))
    return data["ids"], data.get("cond")


@torch.no_grad()
def draft_report(target, draft, gamma: int, n: int, labels=None) -> dict:
    """Acceptance of `draft` in speculative sampling of `target` (n rows in one batch) and its speed against plain
    decoding at batch 1."""
    L = target.config.seq_len
    spec = speculative(target, draft, L, gamma=gamma, batch_size=n, cond=labels, seed=0)
    rounds = [a for row in spec.accepted for a in row]
    one = None if labels is None else labels[:1]
    t0 = time.perf_counter()
    for i in range(4):
        generate(target, L, cond=one, seed=i)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(4):
        speculative(target, draft, L, gamma=gamma, cond=one, seed=i)
    t_spec = time.perf_counter() - t0
    return {"gamma": gamma, "accepted_per_round": sum(rounds) / max(len(rounds), 1),
            "acceptance_rate": sum(rounds) / max(gamma * len(rounds), 1),
            "target_nfe": float(spec.nfe.float().mean()), "tokens": L,
            "plain_seconds": t_plain / 4, "speculative_seconds": t_spec / 4, "speedup": t_plain / t_spec}


if __name__ == "__main__":
    run(main, prog="generator")
