"""Core quantizers against the vector-quantize-pytorch classes they wrap, and against a plain nearest-code search.

    python -m benchmarks.quantizers [--vectors 16384] [--repeats 5]

For each gentok quantizer: forward+backward seconds of the gentok wrapper and of the raw library class (same weights,
same input, same process, interleaved), the wrapper's overhead, and encode tokens/s beside a plain matmul + argmin
search over a codebook of the same size and width. Writes benchmarks/results/quantizers.json.
"""

from __future__ import annotations

import copy

import torch

from benchmarks.common import interleaved, matmul_gflops, parser, print_table, write_json
from gentok.quantizers import FSQConfig, LFQConfig, ResidualFSQConfig, ResidualVQConfig, VQConfig, build_quantizer

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


def main(argv=None):
    p = parser(__doc__, out="quantizers.json")
    p.add_argument("--vectors", type=int, default=16384)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    gflops = matmul_gflops()
    rows = []
    from tqdm import tqdm

    for name, (cfg, _) in tqdm(CASES.items(), desc="quantizers"):
        rows.append(bench(name, cfg, args.vectors, args.repeats))
    print(f"matmul throughput: {gflops:.1f} GFLOP/s")
    print_table(rows, ["quantizer", "fwd_bwd_s", "raw_fwd_bwd_s", "overhead_pct", "encode_tokens_per_s",
                       "plain_search_tokens_per_s", "encode_vs_search"])
    print(f"wrote {write_json(args.out, {'matmul_gflops': gflops, 'rows': rows})}")


if __name__ == "__main__":
    main()
