"""SETRec: order-agnostic history items, one-pass generation of the whole set, faiss == brute force, CF weight
selected on validation only, cold items from text alone, save/load identity, learning on a tiny catalog."""

import numpy as np
import pytest
import torch
from torch import Tensor

from gentok import load
from gentok.config import from_dict, replace, to_dict
from recsys.data import Split
from recsys.models.base import seen_mask
from recsys.evaluation import choose_cf_weight, select_cf_weight
from recsys.index import brute_topk, build_index, faiss_topk, resolve_index
from recsys.models.setrec import SETRec, SETRecConfig, set_mask

E, C, N = 24, 16, 30


def _model(semantic="continuous", n=N, seed=0):
    torch.manual_seed(seed)
    m = SETRec(replace(SETRecConfig.tiny(E, C), semantic=semantic))
    g = torch.Generator().manual_seed(seed)
    m.set_catalog(torch.nn.functional.normalize(torch.randn(n, E, generator=g), dim=-1), torch.randn(n, C, generator=g))
    return m.eval()


@pytest.mark.parametrize("semantic", ["continuous", "fsq"])
def test_permuting_tokens_inside_history_items_leaves_output_unchanged(semantic):
    m = _model(semantic)
    table, _ = m.item_tokens()
    ids = torch.tensor([[3, 7, 1, 9, 4], [0, 2, 2, 5, 8]])
    valid = torch.tensor([[False, True, True, True, True], [True] * 5])
    toks = table[ids]
    out = m.generate(toks, valid)
    g = torch.Generator().manual_seed(1)
    perm = toks.clone()
    for b in range(2):
        for t in range(5):  # a different permutation inside every history item
            perm[b, t] = toks[b, t, torch.randperm(m.set_size, generator=g)]
    assert not torch.equal(perm, toks)
    torch.testing.assert_close(m.generate(perm, valid), out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.generate(perm, valid, all_positions=True)[:, -1], out, atol=1e-5, rtol=1e-5)
    # but the order of the *items* matters (causal across items)
    assert not torch.allclose(m.generate(toks[:, [0, 1, 2, 4, 3]], valid), out, atol=1e-4)


def test_one_forward_pass_yields_all_tokens_and_tokens_are_independent():
    m = _model()
    calls = []
    m.encoder.register_forward_hook(lambda *a: calls.append(1))
    table, _ = m.item_tokens()
    toks = table[torch.tensor([[1, 2, 3], [4, 5, 6]])].detach()
    m.queries.requires_grad_(True)
    out = m.generate(toks, torch.ones(2, 3, dtype=torch.bool))
    assert len(calls) == 1 and out.shape == (2, m.set_size, 8)  # every token of the next item, one encoder pass
    # queries never attend to each other: generated token j depends on query j only
    for j in range(m.set_size):
        grad = torch.autograd.grad(out[:, j].sum(), m.queries, retain_graph=True)[0]
        others = [i for i in range(m.set_size) if i != j]
        assert grad[j].abs().sum() > 0 and grad[others].abs().max() == 0
    # the training pass predicts the next item after every slot, and its last slot equals inference
    full = m.generate(toks, torch.ones(2, 3, dtype=torch.bool), all_positions=True)
    assert len(calls) == 2 and full.shape == (2, 3, m.set_size, 8)
    torch.testing.assert_close(full[:, -1], out)
    torch.testing.assert_close(full[:, 0], m.generate(toks[:, :1], torch.ones(2, 1, dtype=torch.bool)), atol=1e-5,
                               rtol=1e-5)


def test_set_mask_rules():
    item_of = torch.tensor([0, 0, 1, 1, 1, 1])  # two items of two tokens, then two queries reading items <= 1
    is_query = torch.tensor([False, False, False, False, True, True])
    mask = set_mask(item_of, is_query, torch.ones(1, 6, dtype=torch.bool))[0, 0]
    assert not mask[0, 1] and not mask[2, 3]  # siblings inside an item are independent
    assert mask[2, 0] and mask[2, 1] and not mask[0, 2]  # causal across items
    assert mask[4, :4].all() and not mask[4, 5] and not mask[:4, 4:].any()  # queries read history, nobody reads them


def test_faiss_topk_equals_brute_force():
    m = _model(n=60)
    hists = [[1, 2, 3], [5], [7, 8, 9, 10, 11], [0, 59]]
    q, keys = m.queries_and_keys(hists)
    from recsys.models.base import seen_mask

    for exclude in (None, seen_mask(hists, 60)):
        bi, bv = brute_topk(q, keys, 10, exclude)
        fi, fv = faiss_topk(q, keys, 10, exclude)
        assert torch.equal(bi, fi)
        torch.testing.assert_close(bv, fv, atol=1e-5, rtol=1e-5)
    a = m.recommend(hists, k=70, use_faiss=True)
    b = m.recommend(hists, k=70, use_faiss=False)
    assert torch.equal(a[0], b[0]) and (a[0][0, 57:] == -1).all()  # 60 items - 3 seen: the rest are empty slots
    torch.testing.assert_close(b[1][:, :5], m.score_all(hists).masked_fill(seen_mask(hists, 60), -1e9).topk(5).values)


class _SpySplit(Split):
    """A split that records which cases are requested and refuses test."""

    def cases(self, which):
        self.asked.append(which)
        if which == "test":
            raise AssertionError("the CF weight must never be chosen on test cases")
        return super().cases(which)


def test_cf_weight_selected_on_validation_only():
    m = _model()
    rng = np.random.default_rng(0)
    split = _SpySplit([rng.integers(0, N, size=6) for _ in range(12)], N)
    split.asked = []
    res = choose_cf_weight(m, split)
    assert split.asked == ["valid"] and float(m.cf_weight) == pytest.approx(res["weight"])
    # the choice is a function of the validation targets alone: make validation rewards the CF part only
    _, hists, _ = split.cases("valid")
    cf, sem = m.part_scores_for(hists)
    cf_best = cf.argmax(1).numpy()
    sem_best = sem.argmax(1).numpy()
    keep = [i for i in range(len(hists)) if cf_best[i] != sem_best[i] and cf_best[i] not in hists[i]]
    res = select_cf_weight(m, [hists[i] for i in keep], cf_best[keep], grid=(0.0, 1.0))
    assert res["weight"] == 1.0 and res["ndcg"][1.0] == 1.0


def test_cold_items_score_from_text_and_save_load(tmp_path):
    m = _model()
    hists = [[1, 2, 3], [4, 5]]
    before = m.score_all(hists)
    new = m.add_items(m.text[[2, 7]] * 1.0)
    assert new.tolist() == [N, N + 1] and m.num_items == N + 2
    after = m.score_all(hists)
    torch.testing.assert_close(after[:, :N], before)  # existing items unchanged
    cf, sem = m.part_scores_for(hists)
    torch.testing.assert_close(cf[:, N:], sem[:, N:])  # no CF signal: the CF part is imputed by the text part
    torch.testing.assert_close(sem[:, N:], sem[:, [2, 7]])  # same text -> same semantic score as the warm twin
    for w in (0.0, 0.3, 1.0):  # at any weight a cold item scores its semantic part; warm items are unchanged
        s = m.score_all(hists, weight=w)
        torch.testing.assert_close(s[:, N:], sem[:, N:])
        torch.testing.assert_close(s[:, :N], m.part_scores(*[m.generate(*m._history_tokens(hists, m.catalog_table())),
                                                             m.catalog_table()])[0][:, :N] * w + (1 - w) * sem[:, :N])
    m.cf_weight.fill_(0.3)
    m.save_pretrained(tmp_path / "m")
    back = load(tmp_path / "m").eval()
    assert float(back.cf_weight) == pytest.approx(0.3) and back.num_items == N + 2
    torch.testing.assert_close(back.score_all(hists), m.score_all(hists))
    with pytest.raises(ValueError, match="new item text"):
        m.add_items(torch.zeros(2, E + 1))
    with pytest.raises(ValueError, match="semantic"):
        SETRecConfig(semantic="rvq")


@pytest.mark.parametrize("semantic", ["continuous", "fsq"])
def test_learns_a_deterministic_successor(semantic):
    """item i is always followed by item i+1: a few steps must put the successor on top."""
    m = _model(semantic).train()
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(0, N - 9, (32,), generator=g)
    windows = starts[:, None] + torch.arange(9)[None]  # max_items + 1, left-padded like `NextItemWindows`
    lengths = torch.randint(2, 10, (32,), generator=g)
    windows = torch.where(torch.arange(9)[None] >= 9 - lengths[:, None], windows, -1)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    first = None
    for _ in range(150):
        out = m(windows)
        first = first if first is not None else float(out.loss.detach())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    m.eval()
    assert float(out.loss.detach()) < first
    hists = [list(range(s, s + 4)) for s in range(0, N - 5, 3)]
    items, _ = m.recommend(hists, k=3)
    hit = np.mean([h[-1] + 1 in items[i].tolist() for i, h in enumerate(hists)])
    assert hit >= 0.66, hit  # chance level with k=3 of 30 items is 0.1


def test_eval_cache_follows_weights_and_catalog():
    m = _model()
    hist = [[1, 2, 3], [4, 5]]
    before = m.score_all(hist)
    other = _model(seed=1)  # same catalog buffers only in shape: load its weights
    m.load_state_dict(other.state_dict())
    torch.testing.assert_close(m.score_all(hist), other.score_all(hist))  # the cached table was refreshed
    assert not torch.allclose(before, m.score_all(hist))
    # faiss path reuses one index; it must also follow a catalog change
    top = m.recommend(hist, k=5, use_faiss=True)[0]
    torch.testing.assert_close(top, m.recommend(hist, k=5, use_faiss=False)[0])
    m.drop_cf(torch.arange(N))  # every item cold: scores are the semantic part alone, at any weight
    cf, sem = m.part_scores_for(hist)
    torch.testing.assert_close(m.score_all(hist), sem)
    torch.testing.assert_close(m.recommend(hist, k=5, use_faiss=True)[0], m.recommend(hist, k=5, use_faiss=False)[0])
    new = m.add_items(torch.nn.functional.normalize(torch.randn(3, E), dim=-1))
    assert m.recommend(hist, k=N + 3, use_faiss=True, exclude_seen=False)[0].max() == new.max()


def test_cold_items_are_not_trained_as_negatives():
    m = _model().train()
    window = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    cold = torch.tensor([10, 11, 12])
    m.drop_cf(cold)
    table, _ = m.item_tokens()
    table.retain_grad()
    m.item_tokens = lambda items=None: (table, table.sum() * 0)  # observe the gradient reaching the catalog table
    m(window).loss.backward()
    assert table.grad[cold].abs().max() == 0  # no push-down of items without interactions
    assert table.grad[[0, 9, 20]].abs().sum() > 0  # warm negatives still get one


@pytest.fixture(scope="module")
def big():
    """A 20k-item catalog (fixed seed) and 100 users with histories of 1-8 items."""
    m = _model(n=20_000)
    g = torch.Generator().manual_seed(3)
    hists = [torch.randint(0, 20_000, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
             for _ in range(100)]
    return m, hists


def _recall(approx: Tensor, exact: Tensor) -> float:
    return float(np.mean([len(set(a.tolist()) & set(e.tolist())) / len(e) for a, e in zip(approx, exact)]))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_recall_and_seen_items(big, kind):
    m, hists = big
    exact, _ = m.recommend(hists, k=10, use_faiss=False)
    items, scores = m.recommend(hists, k=10, use_faiss=True, index=kind)
    assert _recall(items, exact) >= 0.95
    assert (items >= 0).all() and all(len(set(r.tolist())) == 10 for r in items)
    assert not any(set(r.tolist()) & set(h) for r, h in zip(items, hists))  # seen items never come back
    torch.testing.assert_close(scores, m.score_all(hists).gather(1, items), atol=1e-5, rtol=1e-5)  # true scores
    # exclusion of the very best items: faiss must search k + excluded deep, or they would crowd out the top-10
    q, keys = m.queries_and_keys(hists)
    exclude = seen_mask(hists, m.num_items)
    exclude.scatter_(1, exact[:, :5], True)
    want, _ = brute_topk(q, keys, 10, exclude)
    got, _ = faiss_topk(q, keys, 10, exclude, index=m.indexes.built[kind])
    assert _recall(got, want) >= 0.95 and not exclude.gather(1, got.clamp(min=0)).any() and (got >= 0).all()


def test_approximate_index_is_cached_and_follows_the_catalog(big):
    m, hists = big
    m.recommend(hists[:2], use_faiss=True, index="hnsw")
    first = m.indexes.built["hnsw"]
    m.recommend(hists[2:4], use_faiss=True, index="hnsw")
    assert m.indexes.built["hnsw"] is first  # built once in eval mode
    m.recommend(hists[:2], use_faiss=True)  # "auto" at 20k items is the exact flat index, cached beside it
    assert {"flat", "hnsw"} <= set(m.indexes.built) and m.indexes.built["hnsw"] is first
    new = m.add_items(torch.nn.functional.normalize(torch.randn(2, E), dim=-1))
    assert m.indexes.built == {}  # invalidated with the catalog table
    top, _ = m.recommend([[int(new[0])]], k=5, use_faiss=True, index="ivf")
    keys = m.catalog_keys()  # cold items add a key block: the rebuilt index has the new rows and the new width
    assert m.indexes.built["ivf"].ntotal == m.num_items == len(keys) and m.indexes.built["ivf"].d == keys.shape[1] > 32
    m.keep_items(torch.arange(20_000))  # restore the fixture's catalog for the other tests
    assert m.indexes.built == {}


def test_index_choice_by_config_and_size():
    assert resolve_index("auto", 199_999) == "flat" and resolve_index("auto", 200_000) == "ivf"
    assert resolve_index("auto", 50, approx_min_items=10) == "ivf" and resolve_index("hnsw", 5) == "hnsw"
    m = _model(n=60)
    hists = [[1, 2, 3], [5]]
    m.config = replace(m.config, index="ivf", nprobe=10_000)  # every list scanned: IVF is exact
    exact = m.recommend(hists, k=10, use_faiss=False)[0]
    torch.testing.assert_close(m.recommend(hists, k=10, use_faiss=True)[0], exact)
    assert "ivf" in m.indexes.built and m.indexes.built["ivf"].nprobe == m.indexes.built["ivf"].nlist
    assert build_index(torch.randn(50, 4), "ivf").nprobe >= 1
    for bad in (dict(index="lsh"), dict(nprobe=-1), dict(hnsw_ef=-1), dict(approx_min_items=0),
                dict(recall_target=0.0), dict(recall_target=1.5)):
        with pytest.raises(ValueError):
            SETRecConfig(**bad)
    with pytest.raises(ValueError, match="index"):
        m.recommend(hists, use_faiss=True, index="annoy")
    with pytest.raises(ValueError, match="keys"):
        build_index(torch.zeros(0, 4), "hnsw")
    # a config saved before the index fields existed loads with exact search as before
    old = {key: v for key, v in to_dict(SETRecConfig.tiny()).items()
           if key not in ("index", "approx_min_items", "nprobe", "hnsw_ef", "recall_target")}
    cfg = from_dict(old, SETRecConfig)
    assert cfg.index == "auto" and resolve_index(cfg.index, 1000, cfg.approx_min_items) == "flat"


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_index_breadth_is_calibrated_to_the_recall_target(big, kind):
    """nprobe / efSearch 0 (the default): the first search picks the fewest lists / candidates that reach the recall
    target on its probe queries against exact search; recall on other users then holds too, and a set value is kept."""
    m, hists = big
    m._reset_cache()
    m.recommend(hists[:1], k=10, use_faiss=True, index=kind)  # one user: the probe is topped up with catalog keys
    cal = m.index_calibration[kind]
    assert cal["kind"] == kind and cal["probe_queries"] == 64 and cal["real_queries"] == 1 and cal["recall@k"] >= 0.95
    width = cal["nprobe" if kind == "ivf" else "efSearch"]
    index = m.indexes.built[kind]
    assert (index.nprobe if kind == "ivf" else index.hnsw.efSearch) == width
    if kind == "ivf":
        assert width < index.nlist  # calibration found a cheaper breadth than a full scan on this catalog
    exact, _ = m.recommend(hists, k=10, use_faiss=False)
    approx = m.recommend(hists, k=10, use_faiss=True, index=kind)[0]  # 100 real queries: calibrated again on 64
    assert m.index_calibration[kind]["real_queries"] == 64 and m.indexes.built[kind] is index
    assert _recall(approx, exact) >= 0.9
    m._reset_cache()
    m.config = replace(m.config, nprobe=3, hnsw_ef=7)
    try:
        m.recommend(hists[:2], k=10, use_faiss=True, index=kind)
        assert m.index_calibration == {}
        assert (m.indexes.built[kind].nprobe if kind == "ivf" else m.indexes.built[kind].hnsw.efSearch) == (3 if kind == "ivf" else 7)
    finally:
        m.config = replace(m.config, nprobe=0, hnsw_ef=0)
        m._reset_cache()
