"""SETRec top-K over a large catalog: exact flat faiss search vs the approximate indexes (HNSW, IVF).

For each catalog, the same users are scored with `SETRec.recommend(index=...)` (one generation pass + inner-product
top-K, seen items excluded) against an exact flat index; the table gives users/s, the speed ratio over exact, recall@10
of the approximate top-10 against the exact one, and the index build time (paid once per catalog, reported apart).

Two synthetic catalogs of `--items` items (the model is untrained: search cost does not depend on the weights, but
recall does depend on how the keys are spread):
* `random`: i.i.d. Gaussian item text and CF vectors, the hardest case for a graph or cluster index (no structure);
* `clustered`: item vectors drawn around 2,000 topic centres (within-topic spread 0.5 of the centres' scale), closer to
  real catalogs, where items come in genres and near-duplicates.

    python -m benchmarks.recsys_index                      # 1M items, writes benchmarks/results/recsys_index.json
    python -m benchmarks.recsys_index --items 100000       # quicker
"""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks.common import best_time, machine, parser, print_table, write_json
from gentok.config import replace
from recsys.index import build_index, ivf_nlist
from recsys.models.setrec import SETRec, SETRecConfig


def catalog(kind: str, n: int, text_dim: int = 48, cf_dim: int = 64, topics: int = 2000, seed: int = 0):
    """(text (n, text_dim), cf (n, cf_dim)) item vectors of a synthetic catalog (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randn(n, text_dim, generator=g), torch.randn(n, cf_dim, generator=g)
    if kind != "clustered":
        raise ValueError(f"catalog must be 'random' or 'clustered', got {kind!r}")
    topic = torch.randint(0, topics, (n,), generator=g)
    out = []
    for d in (text_dim, cf_dim):
        centres = torch.randn(topics, d, generator=g)
        out.append(centres[topic] + 0.5 * torch.randn(n, d, generator=g))
    return tuple(out)


def model_over(text: torch.Tensor, cf: torch.Tensor) -> SETRec:
    torch.manual_seed(0)
    cfg = replace(SETRecConfig(), embed_dim=text.shape[1], cf_dim=cf.shape[1], dropout=0.0)
    model = SETRec(cfg)
    model.set_catalog(text, cf)
    return model.eval()


def recall_at(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean over users of |approx top-k & exact top-k| / k."""
    k = exact.shape[1]
    hits = [len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact)]
    return float(np.mean(hits)) / k


def run_catalog(kind: str, args) -> list[dict]:
    text, cf = catalog(kind, args.items)
    model = model_over(text, cf)
    rng = np.random.default_rng(1)
    hists = [rng.integers(0, args.items, size=int(rng.integers(5, 30))).tolist() for _ in range(args.users)]
    model.recommend(hists[:2], k=args.k, index="flat")  # catalog table and keys: built once, cached
    keys = model.catalog_keys()
    rows = []
    t = time.perf_counter()
    flat = build_index(keys, "flat")
    build_flat = time.perf_counter() - t
    model.indexes.built["flat"] = flat
    t_exact, exact = best_time(lambda: model.recommend(hists, k=args.k, index="flat")[0], args.repeats, warmup=0)
    rows.append({"catalog": kind, "index": "flat (exact)", "param": "", "build_s": build_flat,
                 "users_per_s": len(hists) / t_exact, "speedup": 1.0, "recall@10": 1.0})
    params = {"ivf": args.nprobe, "hnsw": args.hnsw_ef}
    for kind_ix in args.indexes.split(","):
        t = time.perf_counter()
        index = build_index(keys, kind_ix)
        build_s = time.perf_counter() - t
        for param in params[kind_ix] + [0]:  # 0: the default, calibrated on the first queries (`recsys.index.calibrate_index`)
            model.config = replace(model.config, nprobe=param, hnsw_ef=param)
            model.indexes.built[kind_ix] = index
            model.index_calibration.pop(kind_ix, None)
            if param and kind_ix == "ivf":
                index.nprobe = param
            elif param:
                index.hnsw.efSearch = param
            t = time.perf_counter()
            model.recommend(hists, k=args.k, index=kind_ix)  # warm-up; with param 0 it calibrates (timed apart)
            first_s = time.perf_counter() - t
            t_ix, approx = best_time(lambda: model.recommend(hists, k=args.k, index=kind_ix)[0], args.repeats,
                                     warmup=0)
            breadth = index.nprobe if kind_ix == "ivf" else index.hnsw.efSearch
            name = "nprobe" if kind_ix == "ivf" else "efSearch"
            row = {"catalog": kind, "index": kind_ix,
                   "param": f"{name}={breadth}" + (f"/{ivf_nlist(args.items)}" if kind_ix == "ivf" else "")
                   + (" (calibrated, default)" if param == 0 else ""),
                   "build_s": build_s, "users_per_s": len(hists) / t_ix, "speedup": t_exact / t_ix,
                   "recall@10": recall_at(approx, exact)}
            if param == 0:
                row["calibration"] = model.index_calibration[kind_ix]
                row["first_call_s"] = first_s
            rows.append(row)
            print_table(rows[-1:], [c for c in rows[-1] if c != "calibration"])
    return rows


def main(argv=None):
    p = parser(__doc__, out="recsys_index.json")
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=512)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--catalogs", default="clustered,random")
    p.add_argument("--indexes", default="ivf,hnsw", help="approximate indexes to compare with exact search")
    p.add_argument("--hnsw-ef", type=lambda s: [int(x) for x in s.split(",")], default=[64, 256])
    p.add_argument("--nprobe", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    rows = []
    for kind in args.catalogs.split(","):
        rows += run_catalog(kind, args)
    cols = ["catalog", "index", "param", "build_s", "users_per_s", "speedup", "recall@10"]
    if args.items <= 200_000:
        print("note: below 200k items SETRec's default ('auto') is the exact flat index")
    print_table(rows, cols, title=f"SETRec top-{args.k}, {args.items:,} items, {args.users} users")
    result = {"machine": machine(), "threads": torch.get_num_threads(), "items": args.items, "users": args.users,
              "k": args.k, "key_dim": None, "rows": rows,
              "note": "speedup = exact flat seconds / index seconds for the same users (generation pass included in "
                      "both); recall@10 = overlap of the top-10 with the exact top-10; build_s paid once per catalog"}
    result["key_dim"] = int(model_over(*catalog("random", 4)).catalog_keys().shape[1])
    write_json(args.out, result)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
