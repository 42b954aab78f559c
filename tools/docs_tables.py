"""Keep the numbers in README.md and docs/*.md equal to the benchmark results they quote.

    python -m tools.docs_tables           # re-render every generated table in place (after a benchmark re-run)
    python -m tools.docs_tables --check   # exit 1, naming each stale table or quote, when the docs are out of date

Two kinds of quoted numbers, both read from `benchmarks/results/*.json`:

- **Generated tables** sit between `<!-- results:NAME -->` and `<!-- /results -->`; `TABLES[NAME]` renders them from
  the JSON, and this tool rewrites them.
- **Inline quotes** in prose carry their source right after the number:
  `18.83 dB<!-- titok_small_multiscale.json: by_source[source=matplotlib,scale=all].psnr -->`. The expression after
  the file name is a path (keys joined by dots, `[3]` for a list position, `[key=value,...]` for the list element
  whose fields match) or arithmetic over paths (`+ - * /`, numbers, parentheses), e.g.
  `x.psnr - x.baseline_psnr` or `code_usage * 100`. A quote matches when the value, rounded to the quoted number of
  decimals, equals it. Quotes are checked, never rewritten: prose around a number may have to change with it.
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import re
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC_FILES = ("README.md", "docs/*.md")

TABLE_RE = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.DOTALL)
# a number (signed unless it follows a word or another quote, as in the range 2.45-2.63; thousands commas), up to 8
# characters of unit, then the annotation
QUOTE_RE = re.compile(r"(?P<num>(?:(?<![\w>.])[-\u2212+])?\d[\d,]*(?:\.\d+)?)(?P<unit>[^\d<\n]{0,8}?)"
                      r"<!-- (?P<file>[\w.-]+\.json): (?P<expr>.+?) -->")


# -- reading the JSON -----------------------------------------------------------------------------------------------
@cache
def load(name: str) -> dict:
    path = RESULTS / name
    if not path.is_file():
        raise ValueError(f"{name}: no such results file in {RESULTS}")
    return json.loads(path.read_text())


_STEP = re.compile(r"\.?(?P<key>[^.\[\]]+)|\[(?P<sel>[^\]]*)\]")


def resolve(data, path: str):
    """The value at `path` in `data`: `a.b[2].c`, `rows[source=matplotlib,scale=all].psnr`, keys with spaces or
    `@` allowed (`SASRec.20.test.ndcg@10.mean`)."""
    cur, pos = data, 0
    for m in _STEP.finditer(path):
        if m.start() != pos:
            raise ValueError(f"bad path {path!r} at {pos}")
        pos = m.end()
        if m.group("key") is not None:
            key = m.group("key")
            if not isinstance(cur, dict) or key not in cur:
                raise ValueError(f"path {path!r}: no key {key!r}")
            cur = cur[key]
        else:
            sel = m.group("sel")
            if not isinstance(cur, list):
                raise ValueError(f"path {path!r}: [{sel}] applied to a {type(cur).__name__}")
            if "=" not in sel:
                cur = cur[int(sel)]
                continue
            want = dict(part.split("=", 1) for part in re.split(r",(?=[\w@ ]+=)", sel))
            hits = [r for r in cur if all(str(r.get(k)) == v for k, v in want.items())]
            if len(hits) != 1:
                raise ValueError(f"path {path!r}: [{sel}] matches {len(hits)} elements, not one")
            cur = hits[0]
    if pos != len(path):
        raise ValueError(f"bad path {path!r}")
    return cur


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
# a path: quoted ('zero_shot.SASRec trained on B.test') when a key holds spaces or parentheses; otherwise a word
# that may hold dots, brackets and inner hyphens (scikit-image), so subtraction needs spaces around its minus
_PATH_TOKEN = re.compile(r"'[^']+'|[A-Za-z_][^\s()+*/-]*(?:-[A-Za-z][^\s()+*/-]*)*")


def evaluate(file: str, expr: str) -> float:
    """`expr` over paths into `file` (see the module docstring), as a float."""
    data = load(file)
    values = {}

    def sub(m):
        name = f"_v{len(values)}"
        values[name] = float(resolve(data, m.group(0).strip("'")))
        return name

    tree = ast.parse(_PATH_TOKEN.sub(sub, expr), mode="eval")

    def run(node):
        if isinstance(node, ast.Expression):
            return run(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](run(node.left), run(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -run(node.operand)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id in values:
            return values[node.id]
        raise ValueError(f"{file}: {expr!r} is not arithmetic over paths")

    return run(tree)


# -- checking inline quotes -----------------------------------------------------------------------------------------
def quoted_value(text: str) -> tuple[float, int]:
    """The number as written and its decimals: '−2.6' -> (-2.6, 1), '1,692' -> (1692.0, 0)."""
    t = text.replace("\u2212", "-").replace(",", "")
    decimals = len(t.split(".")[1]) if "." in t else 0
    return float(t), decimals


def matches(quoted: str, value: float) -> bool:
    q, decimals = quoted_value(quoted)
    return abs(value - q) <= 0.5 * 10 ** -decimals + 1e-9 * max(1.0, abs(q))


def quotes(text: str):
    """Every annotated quote in `text`: (line number, quoted text, file, expression)."""
    for m in QUOTE_RE.finditer(text):
        yield text.count("\n", 0, m.start()) + 1, m.group("num"), m.group("file"), m.group("expr")


def bad_quotes(text: str, where: str) -> list[str]:
    out = []
    for line, num, file, expr in quotes(text):
        try:
            value = evaluate(file, expr)
        except (ValueError, KeyError, IndexError, ZeroDivisionError) as e:
            out.append(f"{where}:{line}: {num} <- {file}: {expr}: {e}")
            continue
        if not matches(num, value):
            out.append(f"{where}:{line}: quotes {num}, {file}: {expr} is {value:.6g}")
    return out


# -- number formatting for the tables -------------------------------------------------------------------------------
def f(x: float, d: int = 2) -> str:
    """Fixed decimals, typographic minus for negatives (as the prose writes them)."""
    s = f"{x:,.{d}f}"
    return s.replace("-", "\u2212") if s.startswith("-") else s


def ci(m: dict, d: int = 4) -> str:
    return f"{f(m['mean'], d)} [{f(m['ci_low'], 3)}, {f(m['ci_high'], 3)}]"


def table(header: list[str], align: str, rows: list[list[str]]) -> str:
    """A Markdown table; `align` has one character per column: l (left) or r (right)."""
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# -- the tables -------------------------------------------------------------------------------------------------------
def _src(d: dict, source: str, scale: str = "all") -> dict:
    return resolve(d, f"by_source[source={source},scale={scale}]")


def glance() -> str:
    tm, ts = load("titok_multiscale.json"), load("titok_small_multiscale.json")
    ft, it = load("flextok.json"), load("image_tokenizers.json")
    s, ar = load("sampling.json"), load("sampling_ar_trained.json")
    au, dna, idx = load("audio.json"), load("dna.json"), load("recsys_index.json")
    rs, eng, qs = load("recsys.json"), load("engines.json"), load("quantizers_search.json")
    gen, rr = load("generators.json"), load("recsys_recipe.json")
    gen_rar = [{r["batch"]: r for r in gen["rar"] if r["shape"] == shape} for shape in gen["settings"]["rar_shapes"]]
    a95 = [r for r in s["assd"] if r["mask_rate"] == 0.95 and r["k"] in (4, 8)]
    ivf = resolve(idx, "rows[catalog=clustered,param=nprobe=8/4000 (calibrated, default)]")
    eq = rs["equal_compute"]
    rd = {r["method"]: r for r in it["rate_distortion"]}
    k32 = resolve(ft, "by_tokens[tokens=32]")
    spark2 = resolve(eng, "results[mode=spark2]")
    served_run, sas_run = rr["rows"][rr["served"]]["test"]["ndcg@10"], rr["rows"]["SASRec (recipe)"]["test"]["ndcg@10"]
    vs_sas, vs_sas_cooc = (rr["ndcg@10_vs"][ref][rr["served"]]["test"] for ref in ("SASRec (recipe)",
                                                                                 "SASRec + co-occurrence"))
    rows = [
        [(f"TiTok `tiny` (default recipe, {tm['wall_seconds'] / 60:.1f} min "
          f"{'on a shared CPU' if 'cpu_seconds' in tm else 'CPU'})"),
         "held-out PSNR, never-seen source, 288 bits",
         f"{f(_src(tm, 'matplotlib')['psnr'])} dB (all views {f(tm['psnr'])})",
         f"{f(_src(tm, 'matplotlib')['baseline_psnr'])} dB", "[titok](docs/titok.md)"],
        [f"TiTok `small` (`--preset small`, {ts['wall_seconds'] / 60:.0f} min CPU)",
         "held-out PSNR, never-seen source, 320 bits",
         f"**{f(_src(ts, 'matplotlib')['psnr'])} dB** (all views {f(ts['psnr'])})",
         f"{f(_src(ts, 'matplotlib')['baseline_psnr'])} dB", "[titok](docs/titok.md)"],
        [f"FlexTok `tiny` ({ft['run_wall_seconds_2_threads'] / 60:.0f} min CPU)",
         "held-out PSNR at k = 32 tokens, 16 flow steps / 1 step",
         f"{f(k32['psnr'])} / {f(k32['one_step_psnr'])} dB", f"{f(k32['baseline_psnr'])} dB: below it",
         "[flextok](docs/flextok.md)"],
        ["binary latents `tiny`", "held-out PSNR, 320 bits (first 64 views)",
         f"{f(rd['binary (Binary)']['psnr'])} dB", f"{f(rd['binary (Binary)']['baseline_psnr'])} dB: below it",
         "[binary](docs/binary.md)"],
        ["VQ code search", "encode time vs vector-quantize-pytorch, 16,384 vectors",
         " / ".join(f"x{f(r['speedup'], 1)}" for r in qs["search_vs_library"]) + ", indices identical",
         "the library's eval forward", "[quantizers](docs/quantizers.md)"],
        ["ASSD (any-subset speculative)", "forward passes at 95% masking, k = 4 / 8",
         " / ".join(f"{f(r['nfe_ratio'])}x fewer" for r in a95) + f", {f(a95[0]['speedup'], 1)}x wall-clock",
         "sequential any-subset sampling", "[generators](docs/generators.md)"],
        ["AR decoding, static KV cache", "tokens/s, batch 1 / 8",
         f"x{f(ar['ar']['b1']['ratio'])} / x{f(ar['ar']['b8']['ratio'])}", "transformers `generate`, same weights",
         "[generators](docs/generators.md)"],
        ["RAR decoding (RAR-B / RAR-XL shapes)",
         f"time, batch 1 / 8, {gen['settings']['rar_tokens']} tokens per image (CPU)",
         " · ".join(f"x{f(r[1]['speedup'])} / x{f(r[8]['speedup'])}" for r in gen_rar)
         + (", same tokens" if all(x["token_identical"] for x in gen["rar"]) else ", tokens differ"),
         "the official `generate`, same weights", "[official generators](docs/official_generators.md)"],
        ["audio codec `tiny`", "held-out SI-SNR, 1 → 6 quantizers (0.8 → 4.8 kbps)",
         f"{f(au['rate_distortion'][0]['si_snr'], 1)} → {f(au['rate_distortion'][-1]['si_snr'], 1)} dB",
         f"mu-law PCM at 4.8 kbps: {f(au['baseline']['si_snr'], 1)} dB", "[audio](docs/audio.md)"],
        ["MergeDNA `tiny`", "held-out base accuracy at 2 / 4 bases per token",
         (f"{f(resolve(dna, 'compression[method=MergeDNA t=4/8]')['base_accuracy'])} / "
         f"{f(resolve(dna, 'compression[method=MergeDNA t=2/8]')['base_accuracy'])}"),
         "k-mers, BPE: lossless at 2.0-2.4 bits/base", "[mergedna](docs/mergedna.md)"],
        ["RecGPT recipe (RecGPT on SASRec + co-occurrence)", "MovieLens test NDCG@10, ratio [paired 95% CI]",
         (f"{f(served_run['mean'], 4)}: x{f(vs_sas['ratio'], 2)} [{f(vs_sas['ci_low'], 2)}, "
          f"{f(vs_sas['ci_high'], 2)}] of SASRec, x{f(vs_sas_cooc['ratio'], 2)} [{f(vs_sas_cooc['ci_low'], 2)}, "
          f"{f(vs_sas_cooc['ci_high'], 2)}] of SASRec + co-occurrence"),
         (f"SASRec {f(sas_run['mean'], 4)}, popularity "
          f"{f(eq['Popularity']['test']['ndcg@10']['mean'], 4)}"), "[recsys](docs/recsys.md)"],
        ["SETRec top-10 on 1M items", "users/s, calibrated IVF vs exact search",
         f"x{f(ivf['speedup'], 1)} at recall@10 {f(ivf['recall@10'], 3)}", "exact faiss flat",
         "[recsys](docs/recsys.md)"],
        ["batch scoring on Spark, 2 workers", "users/s vs one local process (100k users)",
         f"x{f(spark2['vs_local'])}", "local scoring", "[engines](docs/engines.md)"],
    ]
    return table(["capability", "measured", "result", "baseline / peer", "details"], "lllll", rows)


def quantizers() -> str:
    def secs(x):
        return f(x, 3 if x >= 0.1 else 4)

    rows = [[r["quantizer"], secs(r["fwd_bwd_s"]), secs(r["raw_fwd_bwd_s"]),
             f"{'+' if r['overhead_pct'] >= 0 else ''}{f(r['overhead_pct'], 1)}%",
             f"{r['encode_tokens_per_s'] / 1e3:,.1f} k", f"{r['plain_search_tokens_per_s'] / 1e3:,.1f} k"]
            for r in load("quantizers.json")["rows"]]
    return table(["quantizer", "fwd+bwd s (gentok)", "fwd+bwd s (raw)", "overhead", "encode tokens/s",
                  "plain search tokens/s"], "lrrrrr", rows)


def quantizer_search() -> str:
    rows = [[r["quantizer"], f(r["library_encode_s"], 3), f(r["encode_s"], 3), f"x{f(r['speedup'], 1)}",
             "yes" if r["identical_indices"] else "no"] for r in load("quantizers_search.json")["search_vs_library"]]
    return table(["quantizer", "library encode s", "gentok encode s", "speed-up", "identical indices"], "lrrrl", rows)


def titok_sources() -> str:
    rows = []
    for name, label in (("titok_multiscale.json", "`tiny` (288 bits)"), ("titok_small_multiscale.json",
                                                                         "`small` (320 bits)")):
        d = load(name)
        rows.append([label, "all 256 views", f(d["psnr"]), f(d["baseline_psnr"]), f(d["ssim"], 3),
                     f(d["baseline_ssim"], 3), f"{d['code_usage'] * 100:.0f}%"])
        for source, what in (("scikit-image", "validation photographs"), ("matplotlib", "never-seen source")):
            for scale in ("all", "native", "region", "whole"):
                r = _src(d, source, scale)
                rows.append([label, f"{what}, {scale}", f(r["psnr"]), f(r["baseline_psnr"]), f(r["ssim"], 3),
                             f(r["baseline_ssim"], 3), f"{r['code_usage'] * 100:.0f}%"])
    return table(["model", "held-out views", "PSNR", "baseline PSNR", "SSIM", "baseline SSIM", "code usage"],
                 "llrrrrr", rows)


def titok_speed() -> str:
    rows = [[r["preset"], str(r["image_size"]), str(r["tokens"]), f"{r['params_m']:.1f} M",
             f(r["encode_images_per_s"], 2), f(r["decode_images_per_s"], 2),
             f"{f(r['encode_matmul_share'])} / {f(r['decode_matmul_share'])}", f(r["matmul_gflops_then"], 1)]
            for r in load("titok.json")["speed"]]
    return table(["preset", "size", "tokens", "params", "encode img/s", "decode img/s", "matmul share (enc / dec)",
                  "GFLOP/s measured then"], "lrrrrrrr", rows)


def flextok_tokens() -> str:
    rows = [[str(r["tokens"]), f"{r['bits']:.0f}", f(r["psnr"]), f(r["ssim"], 3), f(r["one_step_psnr"]),
             f(r["one_step_ssim"], 3), f(r["baseline_psnr"])] for r in load("flextok.json")["by_tokens"]]
    return table(["tokens kept", "bits", "PSNR, 16 flow steps", "SSIM", "PSNR, 1 step", "SSIM",
                  "equal-bit baseline PSNR"], "rrrrrrr", rows)


def rate_distortion() -> str:
    rows = []
    for r in load("image_tokenizers.json")["rate_distortion"]:
        src = {s["source"]: s for s in r["by_source"]}
        b = r["baseline"]
        gap = r["psnr"] - r["baseline_psnr"]
        rows.append([r["method"], f"{r['bits']:.0f}", f(r["psnr"]), f(r["ssim"], 3), f(r["baseline_psnr"]),
                     f(r["baseline_ssim"], 3), f"{b['resolution']} x {b['bits_per_channel']}",
                     f"{f(src['scikit-image']['psnr'])} ({f(src['scikit-image']['baseline_psnr'])})",
                     f"{f(src['matplotlib']['psnr'])} ({f(src['matplotlib']['baseline_psnr'])})",
                     f"{'yes' if r['beats_baseline'] else 'no'} ({'+' if gap >= 0 else ''}{f(gap)} dB)"])
    return table(["method", "bits / image", "PSNR (dB)", "SSIM", "baseline PSNR", "baseline SSIM",
                  "baseline (px x bits/channel)", "scikit-image PSNR (baseline)", "matplotlib PSNR (baseline)",
                  "beats baseline"], "lrrrrrlrrl", rows)


def flextok_decode_time() -> str:
    rows = [[str(r["flow_steps"]), f(r["seconds_per_batch"], 3), f(r["ratio_vs_titok_decode"], 1),
             f(r["psnr_k_max"]), f(r["ssim_k_max"], 3)]
            for r in load("image_tokenizers.json")["flextok_decode_time"]["by_steps"]]
    return table(["flow steps", "seconds / 16 images", "x TiTok decode", "PSNR (k = K)", "SSIM"], "rrrrr", rows)


def assd() -> str:
    rows = [[f(r["mask_rate"]), str(r["k"]), f(r["nfe_sequential"], 1), f(r["nfe_assd"], 1), f(r["nfe_ratio"]),
             f(r["speedup"]), f(r["nll_sequential"], 3), f(r["nll_assd"], 3)] for r in load("sampling.json")["assd"]]
    return table(["mask", "k", "NFE sequential", "NFE ASSD", "NFE ratio", "wall-clock ratio", "NLL seq", "NLL ASSD"],
                 "rrrrrrrr", rows)


def ar_decoding() -> str:
    rows = []
    for name in ("sampling_ar_trained.json", "sampling_ar.json"):
        a = load(name)["ar"]
        sp = a["speculative"]
        rows.append([(f"{a['pair']} ({a['shape']['dim']} wide, {a['shape']['depth']} layers), gamma {a['gamma']} "
                     f"(`{name}`)"),
                     (f"x{f(a['b1']['ratio'])} ({a['b1']['tokens_per_s_ours']:,.0f} vs "
                     f"{a['b1']['tokens_per_s_gpt2_generate']:,.0f} tok/s)"),
                     (f"x{f(a['b8']['ratio'])} ({a['b8']['tokens_per_s_ours']:,.0f} vs "
                     f"{a['b8']['tokens_per_s_gpt2_generate']:,.0f})"),
                     f"x{f(sp['speedup_vs_plain_ours'])}",
                     f"{f(sp['acceptance_rate'])} ({f(sp['accepted_per_round'])})", f"x{f(sp['ratio_vs_assisted_hf'])}"])
    return table(["pair", "ours vs `GPT2LMHeadModel.generate`, batch 1", "batch 8", "speculative vs our plain decoding",
                  "acceptance (drafts accepted / round)", "vs HF assisted generation"], "llllll", rows)


def audio_speed() -> str:
    sp = load("audio.json")["speed"]
    rows = [[r["model"], f"{r['params_m']:.2f} M", f(r["encode_rtf"], 3), f(r["decode_rtf"], 3)] for r in sp]
    rows.append(["ratio EnCodec / ours", "", f"x{f(sp[0]['encode_rtf_speedup_vs_encodec'])}",
                 f"x{f(sp[0]['decode_rtf_speedup_vs_encodec'])}"])
    return table(["model", "params", "encode RTF", "decode RTF"], "lrrr", rows)


def audio_rd() -> str:
    d = load("audio.json")
    rows = [[str(r["n_quantizers"]), f(r["kbps"], 1), f(r["mel_distance"], 3), f(r["si_snr"], 1)]
            for r in d["rate_distortion"]]
    b = d["baseline"]
    rows.append([f"mu-law PCM ({b['rate_hz']} Hz x {b['bits']} bits)", f(b["kbps"], 1), f(b["mel_distance"], 3),
                 f(b["si_snr"], 1)])
    return table(["quantizers", "kbps", "mel distance", "SI-SNR dB"], "lrrr", rows)


def dna() -> str:
    rows = [[r["method"], f(r["bases_per_token"]), f"{r['vocab_size']:,}", f(r["bits_per_base"]),
             f(r["base_accuracy"], 3)] for r in load("dna.json")["compression"]]
    return table(["method (tiny, window 8)", "bases/token", "vocab", "bits/base", "held-out base accuracy"], "lrrrr",
                 rows)


RECSYS_MODELS = ("SASRec", "RecGPT (text codes)", "RecGPT (collaborative codes)", "SETRec")


def recsys_equal_compute() -> str:
    eq = load("recsys.json")["equal_compute"]
    pop = eq["Popularity"]["test"]
    rows = [["Popularity (training counts)", "—", "—", "—", ci(pop["recall@10"]), ci(pop["ndcg@10"]), "—"]]
    for budget in eq["budgets_s"]:
        for m in RECSYS_MODELS:
            r = eq[m][str(int(budget))]
            steps = str(r["steps_done"]) + (" (+ SASRec)" if "cf_source" in r else "")
            rows.append([m, f"{budget:.0f}", f(r.get("total_cpu_s", r["cpu_s"]), 1), steps, ci(r["test"]["recall@10"]),
                         ci(r["test"]["ndcg@10"]), f(r["valid_ndcg@10_best"], 4)])
    return table(["model", "budget (CPU s)", "used (CPU s)", "steps", "Recall@10", "NDCG@10", "valid NDCG@10"],
                 "lrrrllr", rows)


def recsys_curves() -> str:
    """The learning curves' summary: per model its plateau, when it levels off, when it first reaches SASRec's
    plateau (validation), and the test metrics (CIs) of its best-on-validation weights, against SASRec's."""
    eq = load("recsys.json")["equal_compute"]
    cv, sm = eq["curves"], eq["curve_summary"]
    sas = cv["SASRec"]["test"]["ndcg@10"]["mean"]
    rows = []
    names = ("SASRec", "SETRec on SASRec", "RecGPT (collaborative codes)", "RecGPT (RQ-VAE codes)")
    for m in [m for m in names if m in sm]:
        r, s = cv[m], sm[m]
        reach = s["time_to_sasrec_plateau_s"]
        rows.append([m, f(r["total_cpu_s"], 0), str(r["steps_done"]) + (" (+ SASRec)" if "cf_source" in r else ""),
                     f"{f(s['plateau']['valid_ndcg@10'], 4)} at {f(s['plateau']['total_cpu_s'], 0)} s",
                     f(s["plateau"]["levels_off_at_total_cpu_s"], 0), "never" if reach is None else f(reach, 0),
                     ci(r["test"]["ndcg@10"]), ci(r["test"]["recall@10"]),
                     f"x{f(r['test']['ndcg@10']['mean'] / sas)}"])
    for m in [f"{m} on SASRec" for m in names[2:] if f"{m} on SASRec" in cv]:  # pooled: no curve of their own
        r = cv[m]
        rows.append([f"{m} (w = {r['gen_weight']:g}, validation NLL)", f(r["total_cpu_s"], 0),
                     f"{r['recgpt_steps']} (+ SASRec)", f"{f(r['valid_ndcg@10'], 4)} (pooled)", "—", "—",
                     ci(r["test"]["ndcg@10"]), ci(r["test"]["recall@10"]),
                     f"x{f(r['test']['ndcg@10']['mean'] / sas, 3)}"])
    experts = [f"{m} + co-occurrence"
               for m in ("SASRec", "SETRec on SASRec") + tuple(f"{n} on SASRec" for n in names[2:])]
    for m in [m for m in experts if m in cv]:  # the expert beside a model: no curve of its own
        r = cv[m]
        rows.append([f"{m} (share {r['share']:g})", "—", "—", f"{f(r['valid_ndcg@10'], 4)} (with the expert)", "—",
                     "—", ci(r["test"]["ndcg@10"]), ci(r["test"]["recall@10"]),
                     f"x{f(r['test']['ndcg@10']['mean'] / sas, 3)}"])
    if "Co-occurrence" in cv:  # the model-free baseline: no training, built from the histories being scored
        r = cv["Co-occurrence"]
        rows.append(["Co-occurrence (item-kNN, no training)", "—", "—", f"{f(r['valid'], 4)}", "—",
                     "—", ci(r["test_summary"]["ndcg@10"]), ci(r["test_summary"]["recall@10"]),
                     f"x{f(r['test_summary']['ndcg@10']['mean'] / sas, 3)}"])
    return table(["model", "run (total CPU s)", "steps", "valid NDCG@10 plateau", "levels off (CPU s)",
                  "reaches SASRec's plateau (CPU s)", "test NDCG@10", "test Recall@10", "vs SASRec"],
                 "lrrrrrllr", rows)


def recsys_cold_start() -> str:
    cs = load("recsys.json")["cold_start"]
    baselines = ("Popularity", "Popularity (cold items only)", "Co-occurrence", "Co-occurrence (cold items only)")
    names = [n for n in baselines if n in cs]
    for m in RECSYS_MODELS:
        names += [m] + [n for n in (f"{m} + prior", f"{m} + prior + cold bonus", f"{m} + cold co-occurrence",
                                    f"{m} + co-occurrence") if n in cs]
    rows = []
    for m in names:
        r, label = cs[m], m
        if "calibration" in r:
            share = f"share {r['share']:g}, " if "share" in r else ""
            label = f"{m} ({share}bonus {f(r['calibration']['cold_bonus'])})"
        if "cold_weight" in r:
            label = f"{m} (weights {r['weight']:g} / {r['cold_weight']:g})"
        valid = (f"{f(r['valid']['cold']['recall@10']['mean'], 4)} / {f(r['valid']['warm']['recall@10']['mean'], 4)}"
                 if "valid" in r else "—")
        rows.append([label, ci(r["cold"]["recall@10"]), ci(r["cold"]["ndcg@10"]), ci(r["warm"]["recall@10"]),
                     ci(r["all"]["recall@10"]), valid])
    return table(["model", "cold targets: Recall@10", "cold targets: NDCG@10", "warm targets: Recall@10",
                  "all: Recall@10", "valid: cold / warm Recall@10"], "llllll", rows)


def recsys_zero_shot() -> str:
    zs = load("recsys.json")["zero_shot"]
    rows = []
    names = ["Popularity (B)", "SASRec trained on B"]
    for m in RECSYS_MODELS[1:]:
        names += [n for n in (f"{m} zero-shot", f"{m} zero-shot + popularity prior") if n in zs]
    for m in names:
        r, label = zs[m], m
        where = "A only (B's items added from text)" if "zero-shot" in m else "B (training part)"
        if "calibration" in r:
            label, where = f"{m} (weight {r['calibration']['weight']:g})", where + " + B's popularity"
        valid = f(r["valid_B"]["recall@10"]["mean"], 4) if "valid_B" in r else "—"
        rows.append([label, where, ci(r["test"]["recall@10"]), ci(r["test"]["ndcg@10"]), valid])
    return table(["model", "trained on", "Recall@10", "NDCG@10", "B valid Recall@10"], "lllll", rows)


def recsys_latency() -> str:
    d = load("recsys.json")
    rows = []
    for key, label in (("throughput_demo", "MovieLens"), ("throughput_1m", "synthetic")):
        t = d[key]
        rows.append([f"{label} ({t['items']:,} items)",
                     f"{t['recgpt_beam_users_per_s']:,.0f} ({f(t['recgpt_ms_per_user'], 1)}), {t['recgpt_peak_mib']:.0f}",
                     f"{t['setrec_users_per_s']:,.0f} ({f(t['setrec_ms_per_user'], 1)}), {t['setrec_peak_mib']:.0f}",
                     f"{t['faiss_flat_users_per_s']:,.0f}", f"{f(t['speed_ratio_setrec_over_recgpt'])}x"])
    return table(["catalog", "RecGPT beam: users/s (ms/user), peak MiB", "SETRec: users/s (ms/user), peak MiB",
                  "faiss flat: users/s", "SETRec / RecGPT speed"], "lllrr", rows)


def recsys_index() -> str:
    rows = [[r["catalog"], r["index"], r["param"] or "—", f(r["build_s"], 1), f(r["users_per_s"], 1),
             f"x{f(r['speedup'], 1)}", f(r["recall@10"], 3)] for r in load("recsys_index.json")["rows"]]
    return table(["catalog", "index", "breadth", "build s", "users/s", "vs exact", "recall@10 vs exact"], "lllrrrr",
                 rows)


def engines() -> str:
    rows = [[r["mode"], str(r["workers"]), f(r["startup_s"], 1), f(r["seconds"], 1), f"{r['users_per_s']:,.0f}",
             f(r["vs_local"]), f(r["peak_driver_mib"], 1)] for r in load("engines.json")["results"]]
    return table(["mode", "workers", "start-up (s)", "scoring (s)", "users/s", "vs local", "peak driver memory (MiB)"],
                 "lrrrrrr", rows)


def official_titok() -> str:
    rows = []
    for name in ("official_titok.json", "official_titok_compile.json"):
        for r in load(name)["rows"]:
            rows.append([f"`{name}`", r["variant"], f"x{f(r['encode_ratio'])}", f"x{f(r['decode_ratio'])}",
                         f(r["ids_agree_fraction"], 3)])
    return table(["file", "variant", "encode vs official", "decode vs official", "ids agreeing"], "llrrr", rows)


def generators() -> str:
    """benchmarks/generators.py: every speed as a ratio against its peer in the same process."""
    g = load("generators.json")
    st, rows = g["settings"], []

    def by_batch(items, key):
        return {r["batch"]: r for r in items if key(r)}

    for shape in st["rar_shapes"]:
        rar = by_batch(g.get("rar", []), lambda r, s=shape: r["shape"] == s)
        if rar:
            same = all(r["token_identical"] for r in rar.values())
            rows.append([f"RAR `{shape}` shape, {st['rar_tokens']} tokens, CFG {f(st['cfg'], 1)}",
                         "official `generate`, same weights" + (", same tokens" if same else ", tokens differ")]
                        + [f"x{f(rar[b]['speedup'])}" if b in rar else "" for b in (1, 8)])
    mg = by_batch(g.get("maskgit", []), lambda r: True)
    if mg:
        same = all(r["token_identical"] for r in mg.values())
        steps = next(iter(mg.values()))["steps"]
        rows.append([f"TiTok MaskGIT sampler, L-32 generator shape, {steps} steps",
                     "official `generate`, equal steps" + (", same tokens" if same else ", tokens differ")]
                    + [f"x{f(mg[b]['speedup'])}" if b in mg else "" for b in (1, 8)])
    rs = g.get("rar_speculative", {})

    def spec_cell(r: dict) -> str:
        m_be = r["model"]["acceptance_break_even"]
        need = r["model"]["acceptance_for_x1_5"]
        return (f"x{f(r['speedup_random_weights'])} (acceptance {f(r['acceptance_rate_random_weights'])}; even at "
                f"{f(m_be) if m_be is not None else 'none'}, x1.5 at {f(need) if need is not None else 'none'})")

    if rs:
        r1 = next(iter(rs.values()))
        rows.append([f"speculative `{r1['draft']}` -> `{r1['target']}` (random weights), gamma {r1['gamma']}",
                     "plain guided decoding of the target (acceptance; acceptance where the speed model breaks even,"
                     " reaches x1.5)"] + [spec_cell(rs[k]) if k in rs else "" for k in ("b1", "b8")])
    assd_rows = g.get("assd", [])
    for k in st["assd"]["ks"]:
        a = by_batch(assd_rows, lambda r, k=k: r["k"] == k)
        if a:
            rows.append([f"ASSD k = {k}, {st['assd']['tokens']} tokens, {f(st['assd']['mask_rate'] * 100, 0)}% masked "
                         f"(random weights)", "sequential any-subset sampling: wall-clock (NFE)"]
                        + [f"x{f(a[b]['speedup'])} (x{f(a[b]['nfe_ratio'])})" if b in a else "" for b in (1, 8)])
    sp = g.get("speculative_ar", {})
    if sp:
        rows.append([f"speculative AR, draft with {f(sp['block_params_ratio'], 1)}x fewer block weights, distilled "
                     f"{st['speculative_ar']['distill_steps']} steps", "plain decoding of the target (acceptance)"]
                    + [f"x{f(sp[k]['speedup_vs_plain'])} ({f(sp[k]['acceptance_rate'])})" if k in sp else ""
                       for k in ("b1", "b8")])
    return table(["comparison", "against", "batch 1", "batch 8"], "llrr", rows)


def colour() -> str:
    d = load("colour.json")["models"]
    degrees = [r["degrees"] for r in next(iter(d.values()))["rotations"]]
    rows = []
    for name, m in d.items():
        rot = {r["degrees"]: r for r in m["rotations"]}
        rows.append([name, "PSNR / baseline (dB)"] + [f"{f(rot[g]['psnr'])} / {f(rot[g]['baseline_psnr'])}"
                                                      for g in degrees])
        rows.append(["", "hue error (deg)"] + [f(rot[g]["hue_error"], 1) for g in degrees])
    return table(["model", ""] + [f"+{g}\u00b0" for g in degrees], "ll" + "r" * len(degrees), rows)


def gpu() -> str:
    d = load("gpu.json")
    rows = []
    for r in d["rows"]:
        if r["status"] != "ok":
            rows.append([r["name"], r["status"]] + [""] * 5)
            continue
        rows.append([r["name"], f"{r['params'] / 1e6:,.1f}M", str(r["batch"]), f(r["items_per_s"], 1),
                     f(r["peak_mem_gib"], 1), f"{f(r['loss_first'], 3)} \u2192 {f(r['loss_last'], 3)}",
                     "yes" if r["resume"]["ok"] else "no"])
    return table(["preset", "params", "batch", "items/s", "peak GiB", "loss first \u2192 last", "resumed"],
                 "lrrrrrl", rows)


TABLES: dict[str, Callable[[], str]] = {
    "glance": glance, "quantizers": quantizers, "quantizer-search": quantizer_search,
    "titok-sources": titok_sources, "titok-speed": titok_speed, "flextok-tokens": flextok_tokens,
    "rate-distortion": rate_distortion, "flextok-decode-time": flextok_decode_time, "assd": assd,
    "ar-decoding": ar_decoding, "audio-speed": audio_speed, "audio-rd": audio_rd, "dna": dna,
    "recsys-equal-compute": recsys_equal_compute, "recsys-curves": recsys_curves,
    "recsys-cold-start": recsys_cold_start,
    "recsys-zero-shot": recsys_zero_shot, "recsys-latency": recsys_latency, "recsys-index": recsys_index,
    "engines": engines, "official-titok": official_titok, "colour": colour, "gpu": gpu, "generators": generators,
}


# -- rewriting the files ---------------------------------------------------------------------------------------------
def render(text: str, where: str = "") -> str:
    """`text` with every generated table re-rendered from the JSON."""
    def sub(m):
        name = m.group("name")
        if name not in TABLES:
            raise ValueError(f"{where}: unknown results table {name!r}; known: {sorted(TABLES)}")
        return m.group(1) + TABLES[name]() + m.group(4)

    return TABLE_RE.sub(sub, text)


def doc_paths(root: Path = ROOT) -> list[Path]:
    return sorted(p for pattern in DOC_FILES for p in root.glob(pattern))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table or quote is stale")
    args = p.parse_args(argv)
    problems = []
    for path in doc_paths():
        rel = str(path.relative_to(ROOT))
        text = path.read_text()
        new = render(text, rel)
        if new != text:
            if args.check:
                problems.append(f"{rel}: generated tables are stale (run python -m tools.docs_tables)")
            else:
                path.write_text(new)
                print(f"updated {rel}")
        problems += bad_quotes(new, rel)
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
