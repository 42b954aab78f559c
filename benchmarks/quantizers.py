"""Core quantizers against the vector-quantize-pytorch classes they wrap, and against a plain nearest-code search.

    python -m benchmarks.quantizers [--vectors 16384] [--repeats 5]
    python -m benchmarks.quantizers --search-only [--vectors 16384]     # only the eval code search vs the library

For each gentok quantizer: forward+backward seconds of the gentok wrapper and of the raw library class (same weights,
same input, same process, interleaved), the wrapper's overhead, and encode tokens/s beside a plain matmul + argmin
search over a codebook of the same size and width. Then the eval code search (`gentok.quantizers.search`: chunked,
exact) against the library's own eval forward for the VQ / residual VQ cases: encode seconds of both, their ratio,
and whether the indices are identical. Writes benchmarks/results/quantizers.json.
"""

from __future__ import annotations

import copy

import torch

from benchmarks.common import RESULTS, interleaved, matmul_gflops, parser, print_table, write_json
from gentok.quantizers import FSQConfig, LFQConfig, ResidualFSQConfig, ResidualVQConfig, VQConfig, build_quantizer
from gentok.quantizers.search import DEFAULT_MAX_ELEMENTS

CASES = {
    "VQ 4096x12 cosine": (VQConfig(dim=12, codebook_size=4096), "vq"),
    "VQ 1024x12 euclid": (VQConfig(dim=12, codebook_size=1024, cosine=False), "vq"),
    "FSQ 8-5-5-5": (FSQConfig(dim=4, levels=(8, 5, 5, 5)), "fsq"),
    "LFQ 2^12": (LFQConfig(dim=12, codebook_size=4096), "lfq"),
    "ResidualVQ 4x1024": (ResidualVQConfig(dim=32, num_quantizers=4, codebook_size=1024), "rvq"),
    "ResidualFSQ 4x(8-5-5-5)": (ResidualFSQConfig(dim=32, levels=(8, 5, 5, 5), num_quantizers=4), "rfsq"),
}


def raw_module(q):
    """The wrapped library module (a deep copy, so both see identical weights but keep separate EMA state)."""
    for name in ("vq", "fsq", "lfq", "rvq", "rfsq"):
        if hasattr(q, name):
            return copy.deepcopy(getattr(q, name))
    raise ValueError(type(q).__name__)


def plain_search(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Nearest code by squared distance: ||c||^2 - 2 z.c, argmin, gather."""
    flat = z.reshape(-1, z.shape[-1])
    idx = (codebook.pow(2).sum(1) - 2 * flat @ codebook.T).argmin(1)
    return codebook[idx]


def code_width(q) -> int:
    cfg = q.config
    if hasattr(cfg, "levels"):
        return len(cfg.levels)
    if hasattr(cfg, "codebook_dim") and cfg.codebook_dim:
        return cfg.codebook_dim
    if type(cfg).__name__ == "LFQConfig":
        return int(torch.tensor(cfg.codebook_size).log2())
    return cfg.dim


def bench(name, cfg, vectors: int, repeats: int) -> dict:
    torch.manual_seed(0)
    q = build_quantizer(cfg)
    b = 16
    z = torch.randn(b, vectors // b, cfg.dim)
    q.train()
    q(z)  # k-means init, so both contenders start from the same trained codebook
    raw = raw_module(q)
    raw.train()

    def ours():
        x = z.clone().requires_grad_(True)
        out = q(x)
        (out.quantized.sum() + out.loss).backward()

    def theirs():
        x = z.clone().requires_grad_(True)
        out = raw(x)
        loss = out[2].sum() if len(out) > 2 and torch.is_tensor(out[2]) else 0.0
        (out[0].sum() + loss).backward()

    train = interleaved({"ours": ours, "raw": theirs}, repeats=repeats)
    q.eval()
    width = code_width(q)
    levels = q.num_codebooks
    codebook = torch.randn(q.codebook_size, width)
    proj = torch.randn(b, vectors // b, width)

    def search():
        for _ in range(levels):
            plain_search(proj, codebook)

    enc = interleaved({"encode": lambda: q.encode(z), "search": search}, repeats=repeats)
    return {
        "quantizer": name,
        "vectors": vectors,
        "fwd_bwd_s": train["ours"],
        "raw_fwd_bwd_s": train["raw"],
        "overhead_pct": 100 * (train["ours"] / train["raw"] - 1),
        "encode_tokens_per_s": vectors / enc["encode"],
        "plain_search_tokens_per_s": vectors / enc["search"],
        "encode_vs_search": enc["search"] / enc["encode"],
    }


SEARCH_CASES = ("VQ 4096x12 cosine", "VQ 1024x12 euclid", "ResidualVQ 4x1024")


def search_vs_library(name, cfg, vectors: int, repeats: int) -> dict:
    """Eval encode of the gentok quantizer (chunked exact search) vs the library module's eval forward on the same
    k-means-initialised codebook and input; indices must be identical."""
    torch.manual_seed(0)
    q = build_quantizer(cfg)
    b = 16
    z = torch.randn(b, vectors // b, cfg.dim)
    q.train()
    q(z)  # k-means init
    q.eval()
    lib = raw_module(q).eval()

    def theirs():
        with torch.no_grad():
            return lib(z)[1]

    sec = interleaved({"ours": lambda: q.encode(z), "library": theirs}, repeats=repeats)
    return {"quantizer": name, "vectors": vectors, "encode_s": sec["ours"], "library_encode_s": sec["library"],
            "speedup": sec["library"] / sec["ours"], "identical_indices": bool(torch.equal(q.encode(z), theirs().long())),
            "max_distances_held": DEFAULT_MAX_ELEMENTS, "threads": torch.get_num_threads()}


def main(argv=None):
    p = parser(__doc__, out="quantizers.json")
    p.add_argument("--vectors", type=int, default=16384)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--search-only", action="store_true", help="only the eval code search vs the library")
    args = p.parse_args(argv)
    gflops = matmul_gflops()
    rows = []
    from tqdm import tqdm

    if not args.search_only:
        for name, (cfg, _) in tqdm(CASES.items(), desc="quantizers"):
            rows.append(bench(name, cfg, args.vectors, args.repeats))
    search = [search_vs_library(name, CASES[name][0], args.vectors, args.repeats) for name in SEARCH_CASES]
    print(f"matmul throughput: {gflops:.1f} GFLOP/s")
    if rows:
        print_table(rows, ["quantizer", "fwd_bwd_s", "raw_fwd_bwd_s", "overhead_pct", "encode_tokens_per_s",
                           "plain_search_tokens_per_s", "encode_vs_search"])
    print_table(search, ["quantizer", "vectors", "encode_s", "library_encode_s", "speedup", "identical_indices"],
                title="eval encode: chunked exact search vs vector-quantize-pytorch")
    out = args.out
    if args.search_only and out == str(RESULTS / "quantizers.json"):
        out = str(RESULTS / "quantizers_search.json")  # keep the full run's file
    print(f"wrote {write_json(out, {'matmul_gflops': gflops, 'rows': rows, 'search_vs_library': search})}")


if __name__ == "__main__":
    main()
