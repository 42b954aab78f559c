"""RQ-VAE semantic ids (TIGER): unique codes through the disambiguation level, the code-usage report, the table's
add/keep/save paths, and RecGPT (training, catalog-only recommendations, exact top-k) over them."""

import pytest
import torch
import torch.nn.functional as F

from gentok import load
from gentok.config import replace
from recsys.decoding import CatalogIndex, beam_search, exact_top_k
from recsys.item_tokens import ItemTokenizerConfig
from recsys.models.base import seen_mask
from recsys.models.recgpt import RecGPT, RecGPTConfig
from recsys.semantic_ids import SemanticIdConfig, SemanticIds, build_item_tokenizer, item_tokenizer_class

E, C = 24, 8


def _catalog(n=40, seed=0):
    emb = F.normalize(torch.randn(n, E, generator=torch.Generator().manual_seed(seed)), dim=-1)
    emb[5] = emb[3]  # identical text -> identical residual codes: only the disambiguation level tells them apart
    return emb


def _trained(cfg, rows, steps=40, seed=0, tok=None):
    torch.manual_seed(seed)
    tok = SemanticIds(cfg) if tok is None else tok
    opt = torch.optim.Adam(tok.parameters(), 3e-3)
    for _ in range(steps):  # the first training call k-means initialises every level's codebook
        loss = tok(rows).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tok.eval()


def _unique(codes):
    return torch.unique(codes, dim=0).shape[0] == codes.shape[0]


def test_codes_are_unique_after_the_disambiguation_level_even_when_the_encoder_collapses():
    emb = _catalog()
    tok = SemanticIds(SemanticIdConfig.tiny(E))
    last = tok.encoder[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)  # every item gets the same latent, hence the same residual codes
    stats = tok.build_table(emb)
    codes = tok.codes
    assert (codes[:, :-1] == codes[0, :-1]).all() and codes[:, -1].tolist() == list(range(40))
    assert _unique(codes) and stats["unique_codes"]
    assert stats["unique_prefixes_per_level"] == [1, 1, 1] and stats["max_suffix_used"] == 39
    assert stats["collision_rate"] == pytest.approx(39 / 40) and stats["colliding_items"] == 1.0
    assert stats["codebook_usage"] == [1 / 8] * 3
    CatalogIndex(codes, tok.vocab_sizes)  # the trie accepts the table (it refuses duplicate codes)
    with pytest.raises(ValueError, match="max_suffix=16"):
        SemanticIds(replace(SemanticIdConfig.tiny(E), max_suffix=16)).build_table(emb * 0)


def test_collision_stats_on_a_constructed_table(monkeypatch):
    tok = SemanticIds(SemanticIdConfig.tiny(E))
    prefixes = torch.tensor([[0, 0, 0], [0, 0, 0], [0, 1, 2], [1, 1, 1], [0, 0, 0], [1, 1, 1]])
    monkeypatch.setattr(tok, "encode", lambda emb, cf=None, has_cf=None: prefixes[: len(emb)])
    stats = tok.build_table(torch.zeros(6, E))
    assert tok.codes[:, -1].tolist() == [0, 1, 0, 0, 2, 1]  # 0..n-1 per shared prefix, in catalog order
    assert stats == {"items": 6, "codebook_usage": [2 / 8, 2 / 8, 3 / 8], "unique_prefixes": 3,
                     "unique_prefixes_per_level": [2, 3, 3], "collision_rate": 0.5, "colliding_items": 5 / 6,
                     "max_suffix_used": 2, "unique_codes": True}


def test_add_and_keep_items_keep_codes_unique_and_consistent():
    emb = _catalog()
    tok = _trained(SemanticIdConfig.tiny(E), emb)
    tok.build_table(emb)
    codes = tok.codes.clone()
    assert torch.equal(codes[:, :-1], tok.encode(emb)) and torch.equal(codes[3, :-1], codes[5, :-1])
    assert codes[3, -1] == 0 and codes[5, -1] == 1 and _unique(codes)
    new = tok.add_items(emb[[3, 7]])  # from text alone: the same residual codes, the next free extra index
    assert new.tolist() == [40, 41] and torch.equal(tok.codes[40, :-1], codes[3, :-1]) and tok.codes[40, -1] == 2
    assert torch.equal(tok.codes[:40], codes) and _unique(tok.codes) and tok.config.num_items == 42
    # keep a subset that drops item 3 (extra index 0) but keeps 5 (1) and the added copy (2): a new copy must take 3,
    # not the group's size (2, already used)
    rows = torch.tensor([i for i in range(42) if i != 3])
    before = tok.codes[rows].clone()
    tok.keep_items(rows)
    assert torch.equal(tok.codes, before) and tok.num_items == 41
    again = tok.add_items(emb[[3]])
    assert tok.codes[again, -1].tolist() == [3] and _unique(tok.codes)
    with pytest.raises(ValueError, match="distinct"):
        tok.keep_items(torch.tensor([0, 0]))


def test_save_load_round_trip_gives_identical_codes(tmp_path):
    emb, cf = _catalog(), F.normalize(torch.randn(40, C, generator=torch.Generator().manual_seed(2)), dim=-1)
    has_cf = torch.arange(40) < 30  # the last 10 items are cold: CF predicted from their text
    cfg = SemanticIdConfig.tiny(E, cf_dim=C)
    tok = SemanticIds(cfg)
    tok.fit_cf_map(emb[has_cf], cf[has_cf])
    _trained(cfg, tok.fuse(emb, cf, has_cf), steps=30, seed=1, tok=tok).build_table(emb, cf, has_cf)
    cold = torch.arange(30, 40)
    assert torch.equal(tok.codes[cold, :-1], tok.encode(emb[cold]))  # cold items: codes from their text alone
    tok.add_items(emb[[0]])
    tok.save_pretrained(tmp_path / "ids")
    for back in (load(tmp_path / "ids"), SemanticIds.from_pretrained(tmp_path / "ids")):
        assert isinstance(back, SemanticIds) and back.config == tok.config
        assert torch.equal(back.codes, tok.codes) and torch.equal(back.cf_map, tok.cf_map)
        assert torch.equal(back.encode(emb, cf, has_cf), tok.encode(emb, cf, has_cf))
        assert back.table_stats() == tok.table_stats()


def test_train_item_tokenizer_builds_and_reloads_semantic_ids(tmp_path):
    from recsys.train import train_item_tokenizer

    emb = _catalog()
    tok = train_item_tokenizer(emb, SemanticIdConfig.tiny(E), tmp_path, steps=3, batch_size=16, progress=False)
    assert isinstance(tok, SemanticIds) and tok.num_items == 40 and _unique(tok.codes)
    again = train_item_tokenizer(emb, SemanticIdConfig.tiny(E), tmp_path, steps=3, progress=False)
    assert torch.equal(again.codes, tok.codes)
    assert item_tokenizer_class(ItemTokenizerConfig.tiny(E)).__name__ == "ItemTokenizer"
    with pytest.raises(ValueError, match="no item tokenizer"):
        build_item_tokenizer(RecGPTConfig.tiny(E))


def _recgpt(n=40, cfg=None, steps=40, seed=0):
    emb = _catalog(n)
    cfg = cfg or SemanticIdConfig.tiny(E)
    tok = _trained(cfg, emb, steps=steps, seed=seed)
    tok.build_table(emb)
    torch.manual_seed(seed)
    model = RecGPT(replace(RecGPTConfig.tiny(E), tokenizer=tok.config))
    model.set_catalog(tok, emb)
    return model, emb


def test_recgpt_trains_on_semantic_ids_and_recommends_only_catalog_items(tmp_path):
    model, emb = _recgpt()
    assert model.L == 4 and model.vocab == [8, 8, 8, 64]
    g = torch.Generator().manual_seed(3)
    windows = torch.randint(0, 40, (16, 9), generator=g)
    windows[:4, :3] = -1  # left padding
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    first = float(model(windows).loss.detach())
    for _ in range(30):
        loss = model(windows).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first  # it learns on the semantic-id targets
    model.eval()
    hists = [[1, 2, 3], [7], [0, 5, 9, 11]]
    items, scores = model.recommend(hists, k=10)
    assert ((items >= 0) & (items < 40)).all() and not any(set(r.tolist()) & set(h) for r, h in zip(items, hists))
    assert torch.isfinite(scores).all() and (scores[:, :-1] >= scores[:, 1:]).all()
    new = model.add_items(emb[[3]])  # an item added from text alone joins the catalog with a unique code
    assert new.tolist() == [40] and _unique(model.items.codes)
    model.save_pretrained(tmp_path / "m")
    back = RecGPT.from_pretrained(tmp_path / "m")
    assert isinstance(back.items, SemanticIds) and torch.equal(back.items.codes, model.items.codes)
    torch.testing.assert_close(back.score_all(hists), model.score_all(hists))
    fsq = RecGPT(RecGPTConfig.tiny(E))  # built for FSQ codes: an RQ-VAE table does not fit its embeddings
    with pytest.raises(ValueError, match="built for a ItemTokenizer"):
        fsq.set_catalog(model.items, torch.cat([emb, emb[[3]]]))


def test_exact_top_k_equals_exhaustive_scoring_with_the_disambiguation_level_in_play():
    """Two levels of 3 codes for 40 items: at most 9 prefixes, so most items differ only in their extra index. The
    trie's exhaustive scores equal teacher-forced per-item scores, and `exact_top_k` returns exactly their top-k."""
    model, _ = _recgpt(cfg=replace(SemanticIdConfig.tiny(E), n_levels=2, codebook_size=3), steps=10)
    model.eval()
    assert model.items.table_stats()["max_suffix_used"] >= 4  # the extra level decides much of the ranking
    g = torch.Generator().manual_seed(1)
    hists = [torch.randint(0, 40, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g).tolist()
             for _ in range(48)]
    state = model.decode_init(hists)
    forced = torch.zeros(len(hists), 40)  # enumeration, independent of the trie
    for item in range(40):
        s, codes = state.clone(), model.items.codes[item]
        for level in range(model.L):
            tok = codes[level].repeat(len(hists))
            forced[:, item] += model.decode_logprobs(s, level).gather(1, tok[:, None]).squeeze(1)
            if level < model.L - 1:
                s = model.decode_advance(s, tok, level)
    brute = model.score_all(hists)
    torch.testing.assert_close(brute, forced, rtol=1e-5, atol=1e-5)
    brute = brute.masked_fill(seen_mask(hists, 40), float("-inf"))
    want = brute.topk(3, dim=1)
    items, scores, misses = exact_top_k(model, state, model.index, beam=3, k=3, exclude=hists)
    torch.testing.assert_close(scores, want.values, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(brute.gather(1, items), scores, rtol=1e-5, atol=1e-5)
    narrow, narrow_scores = beam_search(model, state, model.index, beam=3, k=3, exclude=hists)
    missed = int((narrow_scores[:, -1] < want.values[:, -1] - 1e-6).sum())
    assert 0 < missed <= misses  # a beam of 3 over up to 9 prefixes misses here: the comparison is not vacuous
    assert torch.equal(model.recommend(hists, k=3, beam=3, exact=True)[0], items)


def test_bad_inputs_raise_value_errors():
    tok = SemanticIds(SemanticIdConfig.tiny(E))
    bad = _catalog()
    bad[2, 0] = float("nan")
    for call in (lambda: tok.encode(torch.randn(3, E + 1)), lambda: tok.encode(bad), lambda: tok(bad),
                 lambda: tok.build_table(torch.randn(3, E - 1)), lambda: tok.add_items(bad[:3]),
                 lambda: tok(torch.randn(3, E).long()), lambda: tok.codewords(torch.zeros(2, 2, dtype=torch.long))):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError, match="cf_dim=0"):
        tok.fit_cf_map(_catalog(), torch.randn(40, C))
    with pytest.raises(ValueError, match="pass cf"):
        SemanticIds(SemanticIdConfig.tiny(E, cf_dim=C)).build_table(_catalog())
    for kw in ({"n_levels": 0}, {"codebook_size": 1}, {"cf_weight": 0.0}, {"decay": 1.0}):
        with pytest.raises(ValueError):
            replace(SemanticIdConfig.tiny(E), **kw)
    with pytest.raises(ValueError, match="multiple of that"):
        RecGPTConfig(tokenizer=SemanticIdConfig(embed_dim=25))


def test_setrec_takes_its_semantic_tokens_from_the_rqvae_codewords(tmp_path):
    from recsys.models.setrec import SETRec, SETRecConfig

    emb = _catalog()
    tok = _trained(SemanticIdConfig.tiny(E), emb)
    tok.build_table(emb)
    cfg = replace(SETRecConfig.tiny(E, C), semantic="rqvae", ids=tok.config)
    torch.manual_seed(0)
    model = SETRec(cfg)
    cf = torch.randn(40, C, generator=torch.Generator().manual_seed(4))
    with pytest.raises(ValueError, match="RQ-VAE"):
        model.set_catalog(emb, cf)  # semantic="rqvae" needs the tokenizer
    model.set_catalog(emb, cf, ids=tok)
    table, recon = model.item_tokens()
    # items 3 and 5 share their residual codes: the same semantic tokens (their sets differ only by the CF token)
    torch.testing.assert_close(table[3, 1:], table[5, 1:])
    assert not torch.allclose(table[3, 1:], table[7, 1:]) and float(recon) == 0.0
    g = torch.Generator().manual_seed(3)
    windows = torch.randint(0, 40, (16, 9), generator=g)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 3e-3)
    model.train()
    first = float(model(windows).loss.detach())
    for _ in range(20):
        loss = model(windows).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first
    codes_before = tok.codes.clone()
    model.eval()
    new = model.add_items(emb[[7]])  # codes from text alone: the same residual codes as item 7
    assert new.tolist() == [40] and model.config.ids.num_items == 41
    assert torch.equal(model.ids.codes[40, :-1], codes_before[7, :-1])
    hists = [[1, 2, 3], [7], [0, 5, 9, 11]]
    items, _ = model.recommend(hists, k=10)
    assert ((items >= 0) & (items < 41)).all() and not any(set(r.tolist()) & set(h) for r, h in zip(items, hists))
    model.save_pretrained(tmp_path / "s")
    back = SETRec.from_pretrained(tmp_path / "s")
    assert torch.equal(back.ids.codes, model.ids.codes)
    torch.testing.assert_close(back.score_all(hists), model.score_all(hists))
    model.keep_items(torch.arange(20))
    assert model.ids.num_items == 20 and model.config.ids.num_items == 20
    with pytest.raises(ValueError, match="n_levels == n_semantic"):
        replace(SETRecConfig.tiny(E, C), semantic="rqvae", ids=replace(tok.config, n_levels=2))


def test_decoding_benchmark_rows_agree_with_exhaustive_scoring():
    """benchmarks.recsys.decoding on a tiny RecGPT: `exact_top_k` and a beam as wide as the catalog never differ from
    the exhaustive top-10, and the exhaustive row's NDCG@10 is the metric of the targets' full-ranking ranks."""
    from benchmarks.recsys.decoding import run_model
    from recsys.metrics import metrics_from_ranks, target_ranks

    model, _ = _recgpt(cfg=replace(SemanticIdConfig.tiny(E), n_levels=2, codebook_size=3), steps=10)
    model.eval()
    g = torch.Generator().manual_seed(5)
    hists = [torch.randint(0, 40, (3,), generator=g).tolist() for _ in range(24)]
    targets = torch.tensor([next(i for i in range(40) if i not in h) for h in hists])
    rows = {(r["decoder"], r["beam"]): r for r in run_model(model, "m", hists, targets, [10, 40], batch=7)}
    assert rows[("exact_top_k", 10)]["differs_set"] == 0.0 and rows[("beam", 40)]["differs_order"] == 0.0
    assert rows[("beam", 40)]["ndcg@10"] == rows[("exhaustive", 0)]["ndcg@10"]
    ranks = target_ranks(model.score_all(hists), targets, seen_mask(hists, 40))
    assert rows[("exhaustive", 0)]["ndcg@10"] == pytest.approx(float(metrics_from_ranks(ranks.numpy())["ndcg@10"].mean()))
    assert 0.0 <= rows[("beam", 10)]["overlap"] <= 1.0
