"""Sampling benchmarks, each a ratio against a peer run in the same process on the same input.

1. ASSD vs sequential any-subset sampling on the trained image-token AS-ARM (recipes/generator.py): NFE, wall-clock
   and the samples' NLL under the model (the law must not change) at masking rates 50/75/95% and k in {2, 4, 8}.
2. AR decoding with our static KV cache vs transformers' `GPT2LMHeadModel.generate`, the *same weights* copied into
   GPT-2 (logits checked equal), tokens/s at batch 1 and 8 (run interleaved so load drifts hit both alike).
3. Speculative AR sampling with a draft vs our own plain decoding (batch 1): acceptance rate, accepted drafts per
   round, target passes, tokens/s; and vs transformers' assisted generation with the same two networks.
   With --target-dir / --draft-dir (recipes/generator.py --model ar, then --draft-for) the trained pair is used;
   otherwise a random target with a scaled head and a layer-skip draft (its first block).

    python -m benchmarks.sampling                          # reads outputs/generator/model + its token cache
    python -m benchmarks.sampling --model-dir DIR --tokens DIR/../tokens_eval.safetensors --batch 32
    python -m benchmarks.sampling --parts ar --target-dir outputs/generator_ar/model \
        --draft-dir outputs/generator_ar_draft/model      # AR + speculative only, the trained target and draft
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import torch
from safetensors.torch import load_file

import gentok
from benchmarks.common import best_time, interleaved, parser, print_table, pyplot, save_figure, write_json
from gentok.generators import ARConfig, ARTransformer
from gentok.sampling import assd, generate, sequential, speculative


def timed(fn, repeats: int):
    """(best seconds, last result) over `repeats` runs, no warm-up run (each sampler call is already many passes)."""
    return best_time(fn, repeats, warmup=0)


def nll_per_token(model, out) -> tuple[float, float]:
    """Mean and standard error over rows of -log p(generated | prompt) / tokens, in the order each row used."""
    with torch.no_grad():
        lp = model.log_prob(out.ids, out.ranks)
    per = (-lp / out.generated.clamp_min(1)).tolist()
    return statistics.mean(per), statistics.stdev(per) / math.sqrt(len(per))


def bench_assd(model_dir: Path, tokens: Path, batch: int, repeats: int, rates, ks) -> list[dict]:
    model = gentok.load(model_dir).eval()
    ids = load_file(str(tokens))["ids"][:batch]
    rows = []
    for rate in rates:
        g = torch.Generator().manual_seed(int(rate * 1000))
        mask = torch.rand(ids.shape, generator=g) >= rate  # True = given
        t_seq, seq = timed(lambda: sequential(model, ids, mask, seed=0), repeats)
        nll_seq = nll_per_token(model, seq)
        for k in ks:
            t_k, out = timed(lambda: assd(model, ids, mask, k=k, seed=0), repeats)
            nll_k = nll_per_token(model, out)
            rows.append({
                "mask_rate": rate, "k": k, "tokens": float(out.generated.float().mean()),
                "nfe_sequential": float(seq.nfe.float().mean()), "nfe_assd": float(out.nfe.float().mean()),
                "nfe_ratio": float(seq.nfe.sum() / out.nfe.sum()),
                "seconds_sequential": t_seq, "seconds_assd": t_k, "speedup": t_seq / t_k,
                "accepted_per_round": out.summary().get("accepted_per_round", float("nan")),
                "nll_sequential": nll_seq[0], "nll_sequential_se": nll_seq[1],
                "nll_assd": nll_k[0], "nll_assd_se": nll_k[1],
            })
            r = rows[-1]
            print(f"  mask {rate:.2f} k={k}: NFE {r['nfe_sequential']:.1f} -> {r['nfe_assd']:.1f} "
                  f"(x{r['nfe_ratio']:.2f}), time x{r['speedup']:.2f}, NLL {r['nll_sequential']:.3f}"
                  f"±{r['nll_sequential_se']:.3f} vs {r['nll_assd']:.3f}±{r['nll_assd_se']:.3f}", flush=True)
    return rows


def to_gpt2(model: ARTransformer):
    """The same network as a transformers GPT-2: BOS is an extra vocabulary row (never sampled), exact GELU."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    cfg = GPT2Config(vocab_size=c.vocab_size + 1, n_positions=c.seq_len + 1, n_embd=c.dim, n_layer=c.depth,
                     n_head=c.heads, n_inner=int(c.dim * c.mlp_ratio), activation_function="gelu",
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                     tie_word_embeddings=False, bos_token_id=c.vocab_size, eos_token_id=None,
                     pad_token_id=c.vocab_size)
    hf = GPT2LMHeadModel(cfg).eval()
    sd = {"transformer.wte.weight": torch.cat([model.tok_emb.weight, model.bos[None]]),
          "transformer.wpe.weight": model.pos_emb, "transformer.ln_f.weight": model.norm.weight,
          "transformer.ln_f.bias": model.norm.bias,
          "lm_head.weight": torch.cat([model.head.weight, torch.zeros(1, c.dim)])}
    for i, blk in enumerate(model.blocks):
        p = f"transformer.h.{i}."
        sd.update({p + "ln_1.weight": blk.norm1.weight, p + "ln_1.bias": blk.norm1.bias,
                   p + "attn.c_attn.weight": blk.attn.qkv.weight.T, p + "attn.c_attn.bias": blk.attn.qkv.bias,
                   p + "attn.c_proj.weight": blk.attn.proj.weight.T, p + "attn.c_proj.bias": blk.attn.proj.bias,
                   p + "ln_2.weight": blk.norm2.weight, p + "ln_2.bias": blk.norm2.bias,
                   p + "mlp.c_fc.weight": blk.mlp.net[0].weight.T, p + "mlp.c_fc.bias": blk.mlp.net[0].bias,
                   p + "mlp.c_proj.weight": blk.mlp.net[3].weight.T, p + "mlp.c_proj.bias": blk.mlp.net[3].bias})
    missing, unexpected = hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=False)
    if unexpected or any(not k.endswith("attn.bias") for k in missing):
        raise RuntimeError(f"GPT-2 weight copy failed: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():  # the copy must be the same function
        x = torch.randint(c.vocab_size, (2, c.seq_len))
        ours = model(x)
        theirs = hf(torch.cat([torch.full((2, 1), c.vocab_size), x], 1)).logits[..., :c.vocab_size]
        diff = float((ours - theirs).abs().max())
    if diff > 1e-3:
        raise RuntimeError(f"GPT-2 copy disagrees with the gentok model (max |logit diff| {diff})")
    return hf, diff


def hf_generate(hf, batch: int, n: int, assistant=None, gamma: int = 4):
    bos = hf.config.bos_token_id
    kwargs = dict(do_sample=True, max_new_tokens=n, min_new_tokens=n, top_k=0, top_p=1.0,
                  suppress_tokens=[bos], pad_token_id=bos)
    if assistant is not None:
        assistant.generation_config.num_assistant_tokens = gamma
        assistant.generation_config.num_assistant_tokens_schedule = "constant"
        kwargs["assistant_model"] = assistant
    with torch.no_grad():
        ids = torch.full((batch, 1), bos)
        return hf.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)


def peaked(model: ARTransformer, scale: float) -> ARTransformer:
    """Scale the output head so random-weight distributions are far from uniform (acceptance then means something)."""
    with torch.no_grad():
        model.head.weight.mul_(scale)
    return model


def ar_pair(args) -> tuple[ARTransformer, ARTransformer, str]:
    """(target, draft, description): the trained pair when given, else random weights and a layer-skip draft."""
    if args.target_dir:
        if not args.draft_dir:
            raise SystemExit("--target-dir needs --draft-dir (train one with recipes/generator.py --draft-for)")
        target, draft = gentok.load(args.target_dir).eval(), gentok.load(args.draft_dir).eval()
        if target.config.num_classes or draft.config.vocab_size != target.config.vocab_size:
            raise SystemExit("the AR benchmark needs an unconditional target and a draft over its vocabulary")
        return target, draft, f"trained: {args.target_dir} + {args.draft_dir}"
    torch.manual_seed(0)
    cfg = ARConfig(vocab_size=1024, seq_len=args.ar_tokens, dim=args.ar_dim, depth=args.ar_depth,
                   heads=max(1, args.ar_dim // 32))
    target = peaked(ARTransformer(cfg), 4).eval()
    draft = ARTransformer(ARConfig(**{**cfg.__dict__, "depth": 1})).eval()
    # layer-skip draft: the target's embeddings, first block and head
    draft.load_state_dict({k: v for k, v in target.state_dict().items()
                           if not k.startswith("blocks.") or k.startswith("blocks.0.")})
    return target, draft, "random target (head x4), layer-skip draft"


def bench_ar(target: ARTransformer, draft: ARTransformer, what: str, repeats: int, gamma: int) -> dict:
    hf_target, diff_t = to_gpt2(target)
    hf_draft, diff_d = to_gpt2(draft)
    n = target.config.seq_len
    out = {"pair": what, "shape": {k: getattr(target.config, k) for k in ("vocab_size", "dim", "depth", "heads")},
           "draft_shape": {k: getattr(draft.config, k) for k in ("dim", "depth", "heads")}, "tokens": n,
           "logit_max_abs_diff_vs_gpt2": max(diff_t, diff_d), "gamma": gamma}
    for batch in (1, 8):
        t = interleaved({"ours": lambda: generate(target, n, batch_size=batch, seed=0),
                         "gpt2": lambda: hf_generate(hf_target, batch, n)}, repeats)
        out[f"b{batch}"] = {"tokens_per_s_ours": batch * n / t["ours"],
                            "tokens_per_s_gpt2_generate": batch * n / t["gpt2"], "ratio": t["gpt2"] / t["ours"]}
        print(f"  AR b={batch}: ours {batch * n / t['ours']:.0f} tok/s vs GPT-2 generate "
              f"{batch * n / t['gpt2']:.0f} tok/s (x{t['gpt2'] / t['ours']:.2f})", flush=True)
    t = interleaved({"plain": lambda: generate(target, n, batch_size=1, seed=0),
                     "spec": lambda: speculative(target, draft, n, gamma=gamma, batch_size=1, seed=0),
                     "assisted": lambda: hf_generate(hf_target, 1, n, assistant=hf_draft, gamma=gamma)}, repeats)
    spec = speculative(target, draft, n, gamma=gamma, batch_size=8, seed=1)  # acceptance over 8 sequences
    rounds = [a for row in spec.accepted for a in row]
    out["speculative"] = {
        "accepted_per_round": sum(rounds) / max(len(rounds), 1),
        "acceptance_rate": sum(rounds) / max(gamma * len(rounds), 1),
        "target_nfe": float(spec.nfe.float().mean()), "draft_nfe": float(spec.draft_nfe.float().mean()),
        "tokens_per_s": n / t["spec"], "tokens_per_s_plain_ours": n / t["plain"],
        "speedup_vs_plain_ours": t["plain"] / t["spec"], "tokens_per_s_assisted_hf": n / t["assisted"],
        "ratio_vs_assisted_hf": t["assisted"] / t["spec"]}
    s = out["speculative"]
    print(f"  speculative (gamma={gamma}): acceptance {s['acceptance_rate']:.2f} "
          f"({s['accepted_per_round']:.2f}/round), "
          f"target NFE {s['target_nfe']:.1f}/{n}; x{s['speedup_vs_plain_ours']:.2f} vs our plain decoding, "
          f"x{s['ratio_vs_assisted_hf']:.2f} vs HF assisted", flush=True)
    return out


def plot(rows: list[dict], path: Path) -> None:
    fig, ax = pyplot().subplots(1, 2, figsize=(9, 3.2))
    for k in sorted({r["k"] for r in rows}):
        rs = [r for r in rows if r["k"] == k]
        ax[0].plot([r["mask_rate"] for r in rs], [r["nfe_ratio"] for r in rs], "o-", label=f"k={k}")
        ax[1].plot([r["mask_rate"] for r in rs], [r["speedup"] for r in rs], "o-", label=f"k={k}")
    ax[0].set(xlabel="masking rate", ylabel="NFE sequential / ASSD", title="fewer forward passes")
    ax[1].set(xlabel="masking rate", ylabel="time sequential / ASSD", title="wall-clock speedup")
    for a in ax:
        a.axhline(1, color="gray", lw=0.5)
        a.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def main(argv=None):
    p = parser(__doc__, out="sampling.json")
    p.add_argument("--parts", default="assd,ar", help="comma list of: assd, ar")
    p.add_argument("--model-dir", default="outputs/generator/model")
    p.add_argument("--tokens", default=None, help="held-out token cache (default: next to the model dir)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--ks", default="2,4,8")
    p.add_argument("--rates", default="0.5,0.75,0.95")
    p.add_argument("--target-dir", default=None, help="a trained AR generator (else random weights)")
    p.add_argument("--draft-dir", default=None, help="its draft (recipes/generator.py --draft-for)")
    p.add_argument("--ar-dim", type=int, default=256)
    p.add_argument("--ar-depth", type=int, default=4)
    p.add_argument("--ar-tokens", type=int, default=32, help="tokens per sequence of the random AR pair")
    p.add_argument("--gamma", type=int, default=4)
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    torch.set_grad_enabled(False)
    print(f"threads={torch.get_num_threads()}")
    result = {"threads": torch.get_num_threads()}
    rows = []
    if "assd" in parts:
        model_dir = Path(args.model_dir)
        tokens = Path(args.tokens) if args.tokens else model_dir.parent / "tokens_eval.safetensors"
        if not (model_dir / "config.json").is_file() or not tokens.is_file():
            raise SystemExit(f"no trained generator at {model_dir} (or no {tokens}): run recipes/generator.py first")
        print("ASSD vs sequential any-subset sampling (trained image-token AS-ARM, held-out prompts)")
        rows = bench_assd(model_dir, tokens, args.batch, args.repeats, [float(r) for r in args.rates.split(",")],
                          [int(k) for k in args.ks.split(",")])
        result.update({"assd": rows, "model_dir": str(model_dir), "batch": args.batch})
    if "ar" in parts:
        print("AR decoding and speculative sampling vs our plain decoding and transformers")
        result["ar"] = bench_ar(*ar_pair(args), args.repeats, args.gamma)
    out = write_json(args.out, result)
    if rows:
        plot(rows, out.with_suffix(".png"))
        print()
        print_table(rows, ["mask_rate", "k", "nfe_sequential", "nfe_assd", "nfe_ratio", "speedup", "nll_sequential",
                           "nll_assd"])
    if "ar" in result:
        ar = result["ar"]
        print(f"AR tokens/s ratio (ours / GPT-2 generate): b=1 x{ar['b1']['ratio']:.2f}, b=8 x{ar['b8']['ratio']:.2f}; "
              f"speculative vs our plain x{ar['speculative']['speedup_vs_plain_ours']:.2f}")
    print(f"-> {out}")
    return result


if __name__ == "__main__":
    main()
