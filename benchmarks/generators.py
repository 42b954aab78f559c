"""Generator benchmarks: fast sampling at real shapes, each speed a ratio against a peer run in the same process.

Sections (--parts, comma list):
- `assd`: any-subset speculative decoding (ASSD) vs sequential any-subset sampling, both keeping keys and values
  across passes, at batch 1 and 8: NFE reduction, wall-clock speed-up and their ratio (goal: the speed-up within 10%
  of the NFE reduction); the same pair recomputing every pass; and what the cache gains ASSD.
- `spec`: speculative sampling of our AR target with a draft ~4-8x smaller (distilled here on KL to the target's
  logits, `DistillLoss`, or trained ones from --target-dir / --draft-dir) vs plain decoding at batch 1 and 8, and the
  batched sampler vs the same rows one by one: acceptance, target passes, tokens/s.
- `rar`: our RAR (static KV cache, cond + uncond rows in one batch) vs the official `generate` (bytedance/1d-tokenizer,
  --official CHECKOUT) at the RAR-B and RAR-XL shapes, batch 1 and 8, same random weights and settings.
- `maskgit`: our MaskGIT sampler on the converted TiTok-L-32 generator vs the official `generate`, equal steps
  (--maskgit-steps, 8), batch 1 and 8, same random weights and seed (needs --official).
- `rar-spec`: speculative RAR-B -> RAR-XL under classifier-free guidance (exact for the guided law) vs plain guided
  RAR-XL decoding, plus a speed model from measured pass times: the acceptance rate at which the draft breaks even
  and at which it reaches x1.5. Random weights show the cost of every pass, not the acceptance a trained or distilled
  draft reaches (a random B and a random XL are unrelated functions): read the speed model for that.

    python -m benchmarks.generators --quick                    # CPU, a few minutes: small shapes, few tokens
    python -m benchmarks.generators --device cuda --official /path/to/1d-tokenizer      # the full sizes, on a GPU

On a CPU the RAR shapes run with --rar-tokens (quick: 8) tokens instead of 256 (say so when quoting them). Writes
benchmarks/results/generators.json and generators.png (the ratios); with --samples-generator G --samples-tokenizer T
(e.g. the official RAR and MaskGIT-VQGAN weights, or the model `recipes/generator.py` trains and its tokenizer) also
generators_samples.png, a labelled grid of generated images (rows: classes, or samplers for an unconditional model).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import machine, parser, print_table, pyplot, save_figure, write_json
from gentok.generators import ASARM, ARConfig, ARTransformer, ASARMConfig
from gentok.generators.ar import DistillLoss
from gentok.sampling import assd, generate, sequential, speculative
from gentok.sampling.speculative import Conditioned, power_cosine


# -- timing -------------------------------------------------------------------------------------------------------------
def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def race(fns: dict, repeats: int, device, warmup: int = 1) -> dict[str, float]:
    """Fewest seconds of each callable over `repeats` rounds, run round-robin (load drifts hit all alike),
    synchronising the device. Best-of, not the median: on a shared machine other jobs only ever add time, and with a
    few repeats a median still carries their spikes."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: min(v) for k, v in times.items()}


# -- ASSD ----------------------------------------------------------------------------------------------------------------
def bench_assd(args, device) -> list[dict]:
    if args.asarm_dir:
        import gentok

        model = gentok.load(args.asarm_dir).eval().to(device)
        what = f"trained: {args.asarm_dir}"
    else:
        torch.manual_seed(0)
        model = ASARM(ASARMConfig(vocab_size=1024, seq_len=args.assd_tokens, dim=args.assd_dim, depth=4,
                                  heads=args.assd_dim // 32)).eval().to(device)
        what = "random weights"
    L, rows = model.seq_len, []
    for batch in args.batches:
        g = torch.Generator().manual_seed(batch)
        ids = torch.randint(model.vocab_size, (batch, L), generator=g).to(device)
        mask = (torch.rand(batch, L, generator=g) >= args.mask_rate).to(device)  # True = given
        for k in args.ks:
            run = {"seq": lambda c=True: sequential(model, ids, mask, seed=0, use_cache=c),
                   "assd": lambda c=True: assd(model, ids, mask, k=k, seed=0, use_cache=c)}
            t = race({"seq": run["seq"], "assd": run["assd"], "seq_full": lambda: run["seq"](False),
                      "assd_full": lambda: run["assd"](False)}, args.repeats, device)
            seq, out = run["seq"](), run["assd"]()
            nfe_ratio = float(seq.nfe.sum() / out.nfe.sum())
            r = {"model": what, "batch": batch, "k": k, "mask_rate": args.mask_rate, "tokens": L,
                 "nfe_sequential": float(seq.nfe.float().mean()), "nfe_assd": float(out.nfe.float().mean()),
                 "nfe_ratio": nfe_ratio, "speedup": t["seq"] / t["assd"],
                 "efficiency": t["seq"] / t["assd"] / nfe_ratio,
                 "speedup_recomputing": t["seq_full"] / t["assd_full"],
                 "efficiency_recomputing": t["seq_full"] / t["assd_full"] / nfe_ratio,
                 "cache_gain_assd": t["assd_full"] / t["assd"], "cache_gain_sequential": t["seq_full"] / t["seq"],
                 "seconds_sequential": t["seq"], "seconds_assd": t["assd"],
                 "accepted_per_round": out.summary().get("accepted_per_round", float("nan"))}
            rows.append(r)
            print(f"  ASSD b={batch} k={k}: NFE x{nfe_ratio:.2f}, time x{r['speedup']:.2f} (efficiency "
                  f"{r['efficiency']:.2f}; recomputing: x{r['speedup_recomputing']:.2f}); cache makes ASSD "
                  f"x{r['cache_gain_assd']:.2f} faster", flush=True)
    return rows


# -- speculative AR --------------------------------------------------------------------------------------------------------
def distil(target, draft, steps: int, batch: int, device, seed: int = 0):
    """Train `draft` on KL(target || draft) over sequences the target sampled once (the recipe's --draft-for)."""
    if steps <= 0:
        return draft
    with torch.no_grad():
        data = torch.cat([generate(target, target.seq_len, batch_size=256, seed=seed + i).ids
                          for i in range(max(1, steps * batch // 2048))])
    loss_fn = DistillLoss(target)
    opt = torch.optim.AdamW(draft.parameters(), lr=2e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    draft.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = 2e-3 * min(1.0, (step + 1) / 20)
        ids = data[torch.randint(data.shape[0], (batch,), generator=g).to(data.device)]
        loss, _ = loss_fn(draft, ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return draft.eval()


def ar_pair(args, device):
    if args.target_dir:
        import gentok

        if not args.draft_dir:
            raise SystemExit("--target-dir needs --draft-dir (train one with recipes/generator.py --draft-for)")
        t, d = gentok.load(args.target_dir), gentok.load(args.draft_dir)
        return t.eval().to(device), d.eval().to(device), f"trained: {args.target_dir} + {args.draft_dir}"
    torch.manual_seed(0)
    tc = ARConfig(vocab_size=1024, seq_len=args.ar_tokens, dim=args.target_dim, depth=args.target_depth,
                  heads=args.target_dim // 64)
    target = ARTransformer(tc).to(device)
    with torch.no_grad():
        target.head.weight.mul_(4)  # random weights give near-uniform rows; peaked ones make acceptance informative
    target.eval()
    dc = ARConfig(vocab_size=1024, seq_len=args.ar_tokens, dim=args.draft_dim, depth=args.draft_depth,
                  heads=max(1, args.draft_dim // 64))
    t0 = time.perf_counter()
    draft = distil(target, ARTransformer(dc).to(device), args.distill_steps, 32, device)
    print(f"  draft distilled for {args.distill_steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    return target, draft, f"random target (head x4), draft distilled {args.distill_steps} steps"


def _blocks(m) -> int:
    return sum(p.numel() for n, p in m.named_parameters() if n.startswith("blocks."))


def bench_speculative_ar(args, device) -> dict:
    target, draft, what = ar_pair(args, device)
    n, gamma = target.seq_len, args.gamma
    out = {"pair": what, "tokens": n, "gamma": gamma,
           "target": {k: getattr(target.config, k) for k in ("dim", "depth", "heads")},
           "draft": {k: getattr(draft.config, k) for k in ("dim", "depth", "heads")},
           "block_params_ratio": _blocks(target) / _blocks(draft)}
    for batch in args.batches:
        fns = {"plain": lambda b=batch: generate(target, n, batch_size=b, seed=0),
               "spec": lambda b=batch: speculative(target, draft, n, gamma=gamma, batch_size=b, seed=0)}
        if batch > 1:  # the previous sampler: rows one after the other
            fns["one_by_one"] = lambda b=batch: [speculative(target, draft, n, gamma=gamma, seed=i) for i in range(b)]
        t = race(fns, args.repeats, device)
        spec = fns["spec"]()
        rounds = [a for row in spec.accepted for a in row]
        r = {"accepted_per_round": sum(rounds) / max(len(rounds), 1),
             "acceptance_rate": sum(rounds) / max(gamma * len(rounds), 1),
             "target_nfe": float(spec.nfe.float().mean()), "tokens_per_s_plain": batch * n / t["plain"],
             "tokens_per_s_speculative": batch * n / t["spec"], "speedup_vs_plain": t["plain"] / t["spec"]}
        if "one_by_one" in t:
            r["speedup_vs_one_by_one"] = t["one_by_one"] / t["spec"]
        out[f"b{batch}"] = r
        print(f"  speculative AR b={batch}: acceptance {r['acceptance_rate']:.2f}, target NFE {r['target_nfe']:.1f}/{n}"
              f", x{r['speedup_vs_plain']:.2f} vs plain" + (f", x{r['speedup_vs_one_by_one']:.2f} vs one by one"
                                                          if "one_by_one" in t else ""), flush=True)
    return out


# -- RAR ----------------------------------------------------------------------------------------------------------------
RAR_SHAPES = {"tiny": (64, 2, 4, 256), "rar_b": (768, 24, 16, 3072), "rar_l": (1024, 24, 16, 4096),
              "rar_xl": (1280, 32, 16, 5120), "rar_xxl": (1408, 40, 16, 6144)}  # width, depth, heads, MLP width


def official_rar(checkout: Path, shape: str, tokens: int):
    """The official RAR at `shape` with `tokens` tokens (random weights, its own init) from a checkout."""
    from omegaconf import OmegaConf

    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
        from tools.make_official_fixtures import _stand_in_for_torchvision

        _stand_in_for_torchvision()
    import modeling.rar as modeling_rar

    dim, depth, heads, mlp = RAR_SHAPES[shape]
    gen = {"hidden_size": dim, "num_hidden_layers": depth, "num_attention_heads": heads, "intermediate_size": mlp,
           "dropout": 0.0, "attn_drop": 0.0, "image_seq_len": tokens, "condition_num_classes": 1000}
    model = modeling_rar.RAR(OmegaConf.create({"model": {"vq_model": {"codebook_size": 1024}, "generator": gen}}))
    model.set_random_ratio(0.0)
    return model.eval()


def our_rar(shape: str, tokens: int, official=None, seed: int = 0):
    """Our RAR at `shape`: the official model's weights converted, or random weights of unit scale (so the adaLN
    maps are not the zero of the published init and distributions are not flat)."""
    from gentok.generators.rar import RAR, RARConfig

    if official is not None:
        from gentok.pretrained.rar import convert_weights

        return convert_weights({k: v.detach() for k, v in official.state_dict().items()})
    dim, depth, heads, mlp = RAR_SHAPES[shape]
    torch.manual_seed(seed)
    model = RAR(RARConfig(seq_len=tokens, dim=dim, depth=depth, heads=heads, mlp_dim=mlp))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.normal_(0, p.shape[-1] ** -0.5)
    return model.eval()


def bench_rar_vs_official(args, device) -> list[dict]:
    """Ours vs the official `generate` for the RAR shapes at each batch (needs --official)."""
    from gentok.sampling.guided import guided_generate

    if not args.official:
        print("  rar: skipped, needs --official pointing at a checkout of bytedance/1d-tokenizer")
        return []
    rows = []
    for shape in args.rar_shapes:
        official = official_rar(Path(args.official), shape, args.rar_tokens).to(device)
        ours = our_rar(shape, args.rar_tokens, official).to(device)
        for batch in args.batches:
            labels = torch.arange(batch, device=device) * 7 % 1000

            def theirs():
                with torch.no_grad():
                    return official.generate(labels, guidance_scale=args.cfg, randomize_temperature=1.0,
                                             guidance_scale_pow=args.cfg_pow)

            t = race({"ours": lambda: guided_generate(ours, labels, args.cfg, args.cfg_pow, seed=0),
                      "official": theirs}, args.repeats, device)
            torch.manual_seed(0)
            same = torch.equal(theirs(), guided_generate(ours, labels, args.cfg, args.cfg_pow, seed=0).ids)
            r = {"shape": shape, "batch": batch, "tokens": args.rar_tokens, "token_identical": same,
                 "seconds_ours": t["ours"],
                 "seconds_official": t["official"], "speedup": t["official"] / t["ours"],
                 "tokens_per_s_ours": batch * args.rar_tokens / t["ours"]}
            rows.append(r)
            print(f"  RAR {shape} b={batch} ({args.rar_tokens} tokens): ours x{r['speedup']:.2f} vs official "
                  f"generate (same tokens: {same})", flush=True)
    return rows


def official_maskgit(checkout: Path, seq_len: int):
    """The official TiTok MaskGIT generator (ImageBert) at the TiTok-L-32 infer config with `seq_len` tokens (random
    weights, its own init) from a checkout."""
    from omegaconf import OmegaConf

    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
        from tools.make_official_fixtures import _stand_in_for_torchvision

        _stand_in_for_torchvision()
    import modeling.maskgit as modeling_maskgit

    cfg = OmegaConf.to_container(OmegaConf.load(checkout / "configs" / "infer" / "TiTok" / "titok_l32.yaml"),
                                 resolve=True)
    cfg["model"]["generator"].update(image_seq_len=seq_len, dropout=0.0, attn_drop=0.0)
    cfg["model"]["vq_model"].update(num_latent_tokens=seq_len)
    return modeling_maskgit.ImageBert(OmegaConf.create(cfg)).eval()


def bench_maskgit_vs_official(args, device) -> list[dict]:
    """Our MaskGIT sampler (`gentok.sampling.maskgit`) on the converted generator vs the official `generate`, equal
    steps, at the TiTok-L-32 generator shape (needs --official)."""
    import tempfile

    import gentok
    from gentok.sampling.maskgit import maskgit_generate

    if not args.official:
        print("  maskgit: skipped, needs --official pointing at a checkout of bytedance/1d-tokenizer")
        return []
    official = official_maskgit(Path(args.official), 32)
    with tempfile.TemporaryDirectory() as tmp:
        official.save_pretrained(tmp)  # the published layout: config.json + model.safetensors
        ours = gentok.load(tmp).eval().to(device)
    official = official.to(device)
    rows = []
    for batch in args.batches:
        labels = torch.arange(batch, device=device) * 7 % 1000
        kw = {"guidance_scale": 3.0, "guidance_decay": "constant", "guidance_scale_pow": 3.0}

        def theirs():
            return official.generate(labels, randomize_temperature=4.5, num_sample_steps=args.maskgit_steps, **kw)

        def mine():
            return maskgit_generate(ours, labels, steps=args.maskgit_steps, temperature=4.5, seed=0, **kw)

        t = race({"ours": mine, "official": theirs}, args.repeats, device)
        torch.manual_seed(0)
        same = torch.equal(theirs(), mine().ids)
        r = {"shape": "titok_l32", "batch": batch, "steps": args.maskgit_steps, "token_identical": same,
             "seconds_ours": t["ours"], "seconds_official": t["official"], "speedup": t["official"] / t["ours"]}
        rows.append(r)
        print(f"  MaskGIT titok_l32 b={batch} ({args.maskgit_steps} steps): ours x{r['speedup']:.2f} vs official "
              f"generate (same tokens: {same})", flush=True)
    return rows


def pass_seconds(side: Conditioned, batch: int, width: int, at: int, repeats: int, device) -> float:
    """Fewest seconds of one cached pass adding `width` tokens after `at` cached ones (both CFG rows)."""
    model = side.model
    ids = torch.randint(model.vocab_size, (batch, at + width), device=device)
    cache = model.new_cache()
    last = torch.full((batch,), at, device=device)
    side.logits(ids[:, :at], cache, last)
    start = cache.lengths[0] - at
    times = []
    for _ in range(repeats + 1):
        cache.crop(at + start)
        _sync(device)
        t = time.perf_counter()
        side.logits(ids[:, at:], cache, last + width)
        _sync(device)
        times.append(time.perf_counter() - t)
    return min(times[1:])


def speed_model(t_step: float, t_verify: float, t_draft: float, gamma: int) -> dict:
    """Speculative speed-up as a function of the per-token acceptance rate a (i.i.d. model): a round of gamma draft
    steps and one verify pass yields (1 - a^(gamma+1)) / (1 - a) tokens, plain decoding one token per step."""
    def speedup(a):
        tokens = gamma + 1 if a >= 1 else (1 - a ** (gamma + 1)) / (1 - a)
        return tokens * t_step / (gamma * t_draft + t_verify)

    def needed(goal):
        lo, hi = 0.0, 1.0
        if speedup(hi) < goal:
            return None
        for _ in range(50):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if speedup(mid) < goal else (lo, mid)
        return hi
    return {"acceptance_break_even": needed(1.0), "acceptance_for_x1_5": needed(1.5),
            "speedup_at": {f"{a:.1f}": speedup(a) for a in (0.5, 0.7, 0.8, 0.9, 1.0)}}


def bench_rar_speculative(args, device) -> dict:
    """Speculative RAR-B -> RAR-XL (guided target, guided draft) vs plain guided RAR-XL."""
    from gentok.sampling.guided import guided_generate

    L, gamma, out = args.rar_tokens, args.gamma, {}
    draft_shape, target_shape = args.rar_spec
    target, draft = our_rar(target_shape, L, seed=1).to(device), our_rar(draft_shape, L, seed=2).to(device)
    schedule = power_cosine(args.cfg, args.cfg_pow, L)
    for batch in args.batches:
        labels = torch.arange(batch, device=device) * 7 % 1000
        null = torch.full_like(labels, 1000)
        t_side = Conditioned(target, {"cond": labels}, {"cond": null}, schedule)
        d_side = Conditioned(draft, {"cond": labels}, {"cond": null}, schedule)
        t = race({"plain": lambda: guided_generate(target, labels, args.cfg, args.cfg_pow, seed=0),
                  "spec": lambda: speculative(t_side, d_side, L, gamma=gamma, batch_size=batch, seed=0)},
                 args.repeats, device)
        spec = speculative(t_side, d_side, L, gamma=gamma, batch_size=batch, seed=0)
        rounds = [a for row in spec.accepted for a in row]
        at = L // 2 if L > 2 * (gamma + 1) else 1
        passes = {"target_step": pass_seconds(t_side, batch, 1, at, args.repeats, device),
                  "target_verify": pass_seconds(t_side, batch, gamma + 1, at, args.repeats, device),
                  "draft_step": pass_seconds(d_side, batch, 1, at, args.repeats, device)}
        r = {"draft": draft_shape, "target": target_shape, "tokens": L, "gamma": gamma, "cfg": args.cfg,
             "acceptance_rate_random_weights": sum(rounds) / max(gamma * len(rounds), 1),
             "speedup_random_weights": t["plain"] / t["spec"], "pass_seconds": passes,
             "model": speed_model(passes["target_step"], passes["target_verify"], passes["draft_step"], gamma)}
        out[f"b{batch}"] = r
        m = r["model"]
        print(f"  speculative {draft_shape} -> {target_shape} b={batch}: random weights acceptance "
              f"{r['acceptance_rate_random_weights']:.2f}, x{r['speedup_random_weights']:.2f}; break-even at "
              f"acceptance {m['acceptance_break_even']}, x1.5 at {m['acceptance_for_x1_5']}", flush=True)
    return out


def samples_png(args, path: Path) -> dict:
    """Generated samples as one labelled picture at `path`, from the generator and tokenizer the user names.

    A class-conditional generator (e.g. the official RAR + MaskGIT-VQGAN weights) goes through
    `gentok.generate.generate_images`: one row per class of --samples-classes, --samples-per-row images each. An
    unconditional one (the AS-ARM or AR model `recipes/generator.py` trains) samples --samples-per-row images per
    sampler: ASSD and sequential any-subset sampling for an AS-ARM, cached AR sampling for an AR model."""
    import tempfile

    import numpy as np
    from PIL import Image

    import gentok
    from gentok.generate import generate_images
    from gentok.tokenizers.image.assets import save_grid

    gen = gentok.load(args.samples_generator).eval().to(args.device)
    tok = gentok.load(args.samples_tokenizer).eval().to(args.device)
    n, info = args.samples_per_row, {"generator": args.samples_generator, "tokenizer": args.samples_tokenizer}
    t0 = time.perf_counter()
    if getattr(gen, "num_classes", 0) or getattr(gen.config, "num_classes", 0):
        classes = [int(c) for c in args.samples_classes.split(",")]
        with tempfile.TemporaryDirectory() as tmp:
            record = generate_images(gen, tok, classes, n, tmp, seed=0, batch_size=len(classes) * n)
            pics = [torch.from_numpy(np.asarray(Image.open(Path(tmp) / f).convert("RGB")).copy())
                    for f in record["files"]]
        pics = torch.stack(pics).permute(0, 3, 1, 2).float() / 255  # files are class-major: row = class
        rows, labels = list(pics.split(n)), [f"class {c}" for c in classes]
        info.update(classes=classes, nfe_per_image=record["nfe_per_image"], sampler=record["sampler"])
    else:
        L, zeros = gen.seq_len, torch.zeros(n, gen.seq_len, dtype=torch.long, device=args.device)
        if isinstance(gen, ASARM):
            runs = {f"ASSD k={args.ks[0]}": assd(gen, zeros, zeros.bool(), k=args.ks[0], seed=2),
                    "sequential": sequential(gen, zeros, zeros.bool(), seed=2)}
        else:
            runs = {"AR samples": generate(gen, L, batch_size=n, seed=2)}
        with torch.no_grad():
            rows = [tok.decode(out.ids) for out in runs.values()]
        labels = list(runs)
        info.update(sampler=labels, nfe_per_image={k: float(out.nfe.float().mean()) for k, out in runs.items()})
    info["seconds_per_image"] = (time.perf_counter() - t0) / (n * len(rows))
    save_grid(rows, path, row_labels=labels)
    print(f"  samples ({', '.join(labels)}) -> {path}")
    return {"picture": path.name, "rows": labels, "per_row": n, **info}


# -- report ---------------------------------------------------------------------------------------------------------------
def plot(result: dict, path: Path) -> None:
    bars = []
    for r in result.get("assd", []):
        bars += [(f"ASSD b{r['batch']} k{r['k']}\nNFE", r["nfe_ratio"]), (f"ASSD b{r['batch']} k{r['k']}\ntime",
                                                                          r["speedup"])]
    for key, r in result.get("speculative_ar", {}).items():
        if isinstance(r, dict) and "speedup_vs_plain" in r:
            bars.append((f"spec AR {key}\nvs plain", r["speedup_vs_plain"]))
    for r in result.get("rar", []):
        bars.append((f"RAR {r['shape']} b{r['batch']}\nvs official", r["speedup"]))
    if not bars:
        return
    fig, ax = pyplot().subplots(figsize=(max(6, 0.9 * len(bars)), 3.4))
    ax.bar(range(len(bars)), [v for _, v in bars], color="tab:blue")
    ax.set_xticks(range(len(bars)), [k for k, _ in bars], fontsize=7)
    ax.axhline(1, color="gray", lw=0.6)
    ax.set(ylabel="ratio (> 1: faster / fewer)", title="gentok generators: ratios against peers in the same process")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv=None):
    p = parser(__doc__, out="generators.json")
    p.add_argument("--parts", default="assd,spec,rar,rar-spec")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="small shapes, few tokens and repeats (CPU development)")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--asarm-dir", default=None, help="a trained AS-ARM (recipes/generator.py), else random weights")
    p.add_argument("--ks", default="4")
    p.add_argument("--mask-rate", type=float, default=0.75)
    p.add_argument("--target-dir", default=None)
    p.add_argument("--draft-dir", default=None)
    p.add_argument("--gamma", type=int, default=4)
    p.add_argument("--official", default=None, help="a checkout of bytedance/1d-tokenizer (the `rar` section)")
    p.add_argument("--rar-shapes", default="rar_b,rar_xl")
    p.add_argument("--rar-spec", default="rar_b,rar_xl", help="draft,target shapes of the rar-spec section")
    p.add_argument("--rar-tokens", type=int, default=None, help="tokens per image (default 256; quick 8)")
    p.add_argument("--cfg", type=float, default=4.0)
    p.add_argument("--cfg-pow", type=float, default=0.0)
    p.add_argument("--maskgit-steps", type=int, default=8, help="decoding steps of the maskgit section")
    p.add_argument("--update", action="store_true",
                   help="keep the other sections of an existing --out file (re-measure only --parts)")
    p.add_argument("--samples-generator", default=None, help="a generator for the samples picture (gentok.load)")
    p.add_argument("--samples-tokenizer", default=None, help="its tokenizer (gentok.load)")
    p.add_argument("--samples-classes", default="207,360,387,974,88,979,417,279")
    p.add_argument("--samples-per-row", type=int, default=8, help="images per row of the samples picture")
    args = p.parse_args(argv)
    q = args.quick
    args.batches = [int(b) for b in args.batches.split(",")]
    args.ks = [int(k) for k in args.ks.split(",")]
    args.rar_shapes = args.rar_shapes.split(",")
    args.rar_spec = args.rar_spec.split(",")
    args.repeats = args.repeats or (2 if q else 5)
    args.rar_tokens = args.rar_tokens or (8 if q else 256)
    # sizes: the draft has ~9-12x fewer block parameters and 3-4x fewer layers than the target
    args.assd_dim, args.assd_tokens = (128, 32) if q else (256, 64)
    args.target_dim, args.target_depth, args.draft_dim, args.draft_depth = (256, 6, 128, 2) if q else (768, 12, 512, 3)
    args.ar_tokens, args.distill_steps = (32, 100) if q else (64, 600)
    parts = set(args.parts.split(","))
    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    settings = {"parts": sorted(parts), "repeats": args.repeats, "timing": "best of interleaved runs after a warm-up",
                "maskgit_steps": args.maskgit_steps, "rar_tokens": args.rar_tokens, "rar_full_tokens": args.rar_tokens == 256,
                "rar_shapes": args.rar_shapes, "rar_spec": args.rar_spec, "cfg": args.cfg, "cfg_pow": args.cfg_pow,
                "gamma": args.gamma, "assd": {"dim": args.assd_dim, "tokens": args.assd_tokens, "ks": args.ks,
                                              "mask_rate": args.mask_rate},
                "speculative_ar": {"target_dim": args.target_dim, "target_depth": args.target_depth,
                                   "draft_dim": args.draft_dim, "draft_depth": args.draft_depth,
                                   "tokens": args.ar_tokens, "distill_steps": args.distill_steps}}
    result = {"device": str(device), "quick": q, "batches": args.batches, "settings": settings}
    if args.update and Path(args.out).is_file():
        old = json.loads(Path(args.out).read_text())
        old.pop("machine", None)
        kept = {**old.get("settings", {}), "maskgit_steps": args.maskgit_steps,
                "parts": sorted(parts | set(old.get("settings", {}).get("parts", []))),
                "updated_parts_machine": machine()}  # the sections re-measured now ran on this machine state
        result = {**old, "settings": kept}
    print(f"device={device} threads={torch.get_num_threads()} quick={q}")
    if "assd" in parts:
        print("ASSD vs sequential any-subset sampling")
        result["assd"] = bench_assd(args, device)
    if "spec" in parts:
        print("speculative AR sampling vs plain decoding")
        with torch.enable_grad():
            result["speculative_ar"] = bench_speculative_ar(args, device)
    if "rar" in parts:
        print(f"RAR: ours vs the official generate ({args.rar_tokens} tokens)")
        result["rar"] = bench_rar_vs_official(args, device)
    if "maskgit" in parts:
        print(f"MaskGIT: ours vs the official generate ({args.maskgit_steps} steps)")
        result["maskgit"] = bench_maskgit_vs_official(args, device)
    if "rar-spec" in parts:
        print(f"speculative {args.rar_spec[0]} -> {args.rar_spec[1]} with guidance ({args.rar_tokens} tokens)")
        result["rar_speculative"] = bench_rar_speculative(args, device)
    if args.samples_generator and args.samples_tokenizer:
        print("samples picture")
        result["samples"] = samples_png(args, Path(args.out).with_name(Path(args.out).stem + "_samples.png"))
    out = write_json(args.out, result)
    plot(result, out.with_suffix(".png"))
    if result.get("assd"):
        print_table(result["assd"], ["batch", "k", "nfe_ratio", "speedup", "efficiency", "efficiency_recomputing",
                                     "cache_gain_assd"], "\nASSD (efficiency = speed-up / NFE reduction; goal >= 0.9)")
    if result.get("rar"):
        print_table(result["rar"], ["shape", "batch", "tokens", "speedup", "tokens_per_s_ours"], "\nRAR vs official")
    if result.get("maskgit"):
        print_table(result["maskgit"], ["shape", "batch", "steps", "speedup", "token_identical"],
                    "\nMaskGIT sampler vs official, equal steps")
    print(f"-> {out}")
    return result


if __name__ == "__main__":
    main()
