"""Top-k by inner product over a catalog's keys: exact brute force, or a faiss index (exact flat, approximate IVF or
HNSW) whose search breadth is calibrated on real queries to a recall target against exact search.

SETRec scores an item as one inner product between a user query and the item's key (`SETRec.queries_and_keys`), so
its top-k is a maximum-inner-product search. `IndexCache` is what the model keeps in eval mode: one built index per
kind over the current keys, rebuilt when the keys change, and what calibration chose for it. Excluded (seen) items
never come back from any index: the search asks for `k + most excluded per user` neighbours and filters.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from recsys.models.base import finish_topk, topk_items

INDEX_KINDS = ("flat", "ivf", "hnsw")


def brute_topk(q: Tensor, keys: Tensor, k: int, exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Exact top-k of q (b, D) @ keys (N, D).T, with `exclude` (b, N) bool items removed."""
    items, vals = topk_items((q @ keys.T).float(), k, exclude)
    return items.cpu(), vals.cpu()


def flat_ip_index(keys: Tensor):
    """A faiss flat (exact) inner-product index over `keys` (N, D)."""
    return build_index(keys, "flat")


def resolve_index(kind: str, num_items: int, approx_min_items: int = 200_000) -> str:
    """The index kind "auto" stands for: exact "flat" below `approx_min_items`, "ivf" from there on.

    Why IVF rather than HNSW, measured (`python -m benchmarks.recsys_index`, `benchmarks/results/recsys_index.json`:
    1M items of 2,000 topics, 256 users): IVF calibrated to 8 of 4,000 lists is x29.9 faster than exact search at
    recall@10 0.992 (64 lists: x15.9 at 0.9996), while HNSW (M 32) reaches only 0.19-0.40 at efSearch 64-256: items of
    one topic are near-ties that a graph walk misses but an IVF list holds together; the IVF build (48 s) is also a
    third of the graph's (157 s). Recall depends on the catalog, so the lists scanned are calibrated on real queries
    (`calibrate_index`) unless `nprobe` is set."""
    if kind not in INDEX_KINDS + ("auto",):
        raise ValueError(f"index must be one of {INDEX_KINDS + ('auto',)}, got {kind!r}")
    if kind != "auto":
        return kind
    return "flat" if num_items < approx_min_items else "ivf"


def ivf_nlist(num_items: int) -> int:
    """IVF list count ~ 4 * sqrt(N) (faiss's guideline range is 4-16 sqrt(N)): lists of ~sqrt(N)/4 items."""
    return max(1, min(num_items, int(round(4 * math.sqrt(num_items)))))


PROBE_QUERIES = 64  # queries calibration checks against exact search


@torch.no_grad()
def calibrate_index(index, kind: str, q: Tensor, keys: Tensor, k: int, target: float = 0.95) -> dict:
    """Set the search breadth of an approximate `index` (IVF nprobe, HNSW efSearch) to the smallest power of two
    whose top-k reaches `target` recall against exact search on `PROBE_QUERIES` probe queries: the queries `q` the
    index is asked (the catalog and query distribution at hand; `SETRec.recommend` calibrates again while it has seen
    fewer than `PROBE_QUERIES` real ones), topped up when there are fewer with sums of random pairs of catalog keys
    (fixed seed): a taste between two items, harder than an item's own key. A full scan is the fallback. Seen-item
    exclusion is left out: it removes items from both lists alike. Returns what was chosen and the recall reached."""
    probe = q[:PROBE_QUERIES].float()
    if len(probe) < PROBE_QUERIES:
        g = torch.Generator().manual_seed(0)
        pairs = torch.randint(0, keys.shape[0], (2, PROBE_QUERIES - len(probe)), generator=g)
        probe = torch.cat([probe, (keys[pairs[0]] + keys[pairs[1]]).float().to(probe.device)])
    kk = min(k, keys.shape[0])
    exact = _exact_topk(probe, keys.float(), kk)
    limit = index.nlist if kind == "ivf" else max(kk, keys.shape[0])
    x = np.ascontiguousarray(probe.cpu().numpy())
    width = 8
    while True:
        width = min(width, limit)
        if kind == "ivf":
            index.nprobe = width
        else:
            index.hnsw.efSearch = width
        _, got = index.search(x, kk)
        recall = float(np.mean([len(set(a) & set(e)) / kk for a, e in zip(got.tolist(), exact.tolist())]))
        if recall >= target or width >= limit:
            break
        width *= 2
    return {"kind": kind, "nprobe" if kind == "ivf" else "efSearch": width, "recall@k": recall, "k": kk,
            "probe_queries": len(x), "real_queries": min(len(q), PROBE_QUERIES), "target": target}


def _exact_topk(q: Tensor, keys: Tensor, k: int, chunk: int = 65536) -> Tensor:
    """(b, k) indices of the exact top-k inner products, the score matrix made `chunk` keys at a time."""
    best_v, best_i = None, None
    for s in range(0, keys.shape[0], chunk):
        v, i = (q @ keys[s:s + chunk].T).topk(min(k, keys.shape[0] - s), dim=1)
        i = i + s
        if best_v is not None:
            v, j = torch.cat([best_v, v], 1).topk(k, dim=1)
            i = torch.cat([best_i, i], 1).gather(1, j)
        best_v, best_i = v, i
    return best_i


def default_nprobe(nlist: int) -> int:
    """Lists scanned per query when `nprobe=0`: a quarter of them (at least 16). Measured on SETRec keys of 20k
    items (nlist 566), recall@10 against exact is ~0.6 at nprobe 32, ~0.9 at 64 and 1.0 at 128, so a smaller fraction
    is not safe without measuring recall on the catalog at hand (set `nprobe` after measuring)."""
    return max(1, min(nlist, max(16, nlist // 4)))


def build_index(keys: Tensor, kind: str = "flat", nprobe: int = 0, hnsw_ef: int = 128, hnsw_m: int = 32):
    """A faiss inner-product index of `kind` ("flat", "ivf", "hnsw") over `keys` (N, D), ready to search.

    IVF: `ivf_nlist(N)` lists, k-means trained on at most 64 items per list (a random sample with a fixed seed, so
    builds are repeatable), `nprobe` lists searched (0: `default_nprobe`). HNSW: `hnsw_m` links per node,
    efConstruction 2 * hnsw_m, efSearch `hnsw_ef`."""
    import faiss

    if keys.ndim != 2 or not len(keys):
        raise ValueError(f"keys must be a non-empty (N, D) matrix, got {tuple(keys.shape)}")
    x = np.ascontiguousarray(keys.detach().float().cpu().numpy())
    n, d = x.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = ivf_nlist(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed, index.cp.max_points_per_centroid = 1234, 64  # bounded, repeatable k-means
        index.cp.min_points_per_centroid = 1  # small catalogs: no warning spam, the lists are just small
        index.train(x)
        index.nprobe = nprobe if nprobe > 0 else default_nprobe(nlist)
        index.nprobe = min(index.nprobe, nlist)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 2 * hnsw_m
        index.hnsw.efSearch = hnsw_ef
    else:
        raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
    index.add(x)
    return index


def faiss_topk(q: Tensor, keys: Tensor, k: int, exclude: Tensor | None = None, index=None,
               max_excluded: int | None = None) -> tuple[Tensor, Tensor]:
    """Top-k with a faiss inner-product index, vectorised over users. `index` reuses one built by `build_index(keys,
    kind)` (default: a new exact flat one); with an approximate index the result is approximate too. Excluded items
    are dropped by asking for `k + most excluded per user` neighbours and filtering, so an excluded item is never
    returned by any index; slots a (approximate) search could not fill come back as item -1, score -inf."""
    n = keys.shape[0]
    index = flat_ip_index(keys) if index is None else index
    if exclude is None or not len(exclude):
        extra = 0
    elif max_excluded is not None:
        extra = max_excluded
    else:
        extra = int(exclude.count_nonzero(dim=1).max())  # a full scan of (b, N): pass max_excluded when known
    kk = min(n, k + extra)
    vals, items = index.search(np.ascontiguousarray(q.float().cpu().numpy()), kk)
    vals, items = torch.from_numpy(vals), torch.from_numpy(items).long()
    bad = items < 0  # an approximate index may find fewer than kk neighbours (faiss fills with -1, -FLT_MAX)
    if exclude is not None:
        bad = bad | exclude.cpu().gather(1, items.clamp(min=0))
    if exclude is not None or bool(bad.any()):
        vals = vals.masked_fill(bad, float("-inf"))
        # stable re-sort pushes excluded hits to the end while keeping faiss order among the rest
        order = torch.sort(vals, dim=1, descending=True, stable=True).indices
        vals, items = vals.gather(1, order), items.gather(1, order)
    return finish_topk(items[:, :k], vals[:, :k], k)


class IndexCache:
    """The faiss indexes built over one key matrix (`built`: kind -> index) and what `calibrate_index` chose for each
    (`calibration`: kind -> report). The owner drops it whenever its keys change (weights, catalog, device)."""

    def __init__(self):
        self.built: dict = {}
        self.calibration: dict = {}

    def search(self, q: Tensor, keys: Tensor, k: int, kind: str, exclude: Tensor | None = None,
               max_excluded: int | None = None, nprobe: int = 0, hnsw_ef: int = 0, recall_target: float = 0.95,
               keep: bool = True) -> tuple[Tensor, Tensor]:
        """`faiss_topk` with the index of `kind` over `keys` (N, D), built on first use (kept when `keep`, i.e. in
        eval mode). With `nprobe` / `hnsw_ef` 0 an IVF / HNSW index is calibrated (`calibrate_index`) on the queries
        it is asked until it has seen `PROBE_QUERIES` real ones: top-ups stand in for real queries only until then."""
        index = self.built.get(kind)
        if not keep or index is None or index.ntotal != len(keys):
            index = build_index(keys, kind, nprobe=nprobe, hnsw_ef=hnsw_ef or 128)
            self.built = {**self.built, kind: index} if keep else {}
            self.calibration.pop(kind, None)
        cal = self.calibration.get(kind)
        if ((kind == "ivf" and not nprobe) or (kind == "hnsw" and not hnsw_ef)) and (
                cal is None or cal["real_queries"] < min(len(q), PROBE_QUERIES)):
            self.calibration[kind] = calibrate_index(index, kind, q, keys, k, recall_target)
        return faiss_topk(q, keys, k, exclude, index=index, max_excluded=max_excluded)
