"""Collaborative item codes (text fused with CF vectors; cold items coded from text alone) and RecGPT's optional
item-id embedding."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gentok import load
from gentok.config import replace
from recsys.item_tokens import ItemTokenizer, ItemTokenizerConfig
from recsys.models.recgpt import RecGPT, RecGPTConfig

E, C = 24, 8


def _items(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    text = F.normalize(torch.randn(n, E, generator=g), dim=-1)
    cf = torch.randn(n, C, generator=g) * 3
    return text, cf


def _trained(cfg, x, steps=60):
    torch.manual_seed(0)
    tok = ItemTokenizer(cfg)
    opt = torch.optim.Adam(tok.parameters(), 1e-2)
    for _ in range(steps):
        loss = tok(x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tok.eval()


def _collab_tokenizer(text, cf, has_cf, weight=1.0):
    cfg = replace(ItemTokenizerConfig.tiny(E, cf_dim=C), cf_weight=weight, max_suffix=64)
    tok = ItemTokenizer(cfg)
    tok.fit_cf_map(text[has_cf], cf[has_cf])
    x = tok.fuse(text, cf, has_cf)
    trained = _trained(cfg, x)
    trained.cf_map = tok.cf_map
    return trained


def test_cf_map_fits_a_linear_signal_and_predicts_unit_vectors():
    text, _ = _items(200)
    w = torch.randn(E, C, generator=torch.Generator().manual_seed(3))
    cf = text @ w  # CF that is a linear function of text: the ridge map recovers its direction (up to the norm)
    tok = ItemTokenizer(ItemTokenizerConfig.tiny(E, cf_dim=C))
    fit_cos = tok.fit_cf_map(text[:150], cf[:150], ridge=1e-3)
    pred = tok.predict_cf(text[150:])
    held_out = F.cosine_similarity(pred, F.normalize(cf[150:], dim=-1))
    assert fit_cos > 0.98 and held_out.mean() > 0.97 and held_out.min() > 0.9
    torch.testing.assert_close(pred.norm(dim=-1), torch.ones(50))
    with pytest.raises(ValueError, match="cf_dim=0"):
        ItemTokenizer(ItemTokenizerConfig.tiny(E)).fit_cf_map(text, cf)
    with pytest.raises(ValueError, match="CF vectors"):
        tok.fit_cf_map(text, cf[:, :3])


def test_cold_items_get_text_only_codes_and_warm_codes_depend_on_cf():
    text, cf = _items()
    has_cf = torch.ones(len(text), dtype=torch.bool)
    has_cf[::4] = False  # cold items: no interactions, their CF rows are meaningless
    tok = _collab_tokenizer(text, cf, has_cf)
    stats = tok.build_table(text, cf, has_cf)
    assert stats["unique_codes"] and tok.codes.shape == (len(text), 4)
    cold = (~has_cf).nonzero().squeeze(1)
    # a cold item's codes are exactly the text-only path's (encode without CF), whatever its CF row holds
    assert torch.equal(tok.codes[cold, :-1], tok.encode(text[cold]))
    junk = cf.clone()
    junk[cold] = torch.randn(len(cold), C) * 100
    assert torch.equal(tok.encode(text, junk, has_cf), tok.encode(text, cf, has_cf))
    # warm items' codes depend on their CF vectors: other CF vectors give other codes (for most items)
    warm = has_cf.nonzero().squeeze(1)
    other = cf[torch.roll(warm, 1)]
    changed = (tok.encode(text[warm], other) != tok.encode(text[warm], cf[warm])).any(1).float().mean()
    assert changed > 0.5
    # new items from text alone (zero-shot): coded like cold items, appended after the frozen table, still unique
    frozen = tok.codes.clone()
    new = tok.add_items(text[cold[:3]])
    assert torch.equal(tok.codes[new, :-1], tok.codes[cold[:3], :-1]) and stats["items"] == len(text)
    assert torch.unique(tok.codes, dim=0).shape[0] == tok.num_items
    assert torch.equal(tok.codes[: len(text)], frozen)  # frozen rows untouched
    with pytest.raises(ValueError, match="pass cf"):
        tok.build_table(text)


def test_collaborative_codes_follow_cf_neighbours():
    """Items with equal CF vectors but unrelated text share more code tokens than text-only codes give them."""
    g = torch.Generator().manual_seed(5)
    text = F.normalize(torch.randn(64, E, generator=g), dim=-1)
    groups = torch.arange(64) % 4
    cf = F.normalize(torch.randn(4, C, generator=g), dim=-1)[groups]
    has_cf = torch.ones(64, dtype=torch.bool)
    collab = _collab_tokenizer(text, cf, has_cf, weight=3.0)
    collab.build_table(text, cf, has_cf)
    plain = _trained(replace(ItemTokenizerConfig.tiny(E), max_suffix=64), text)
    plain.build_table(text)

    def same_group_agreement(codes):
        c = codes[:, :-1]
        same = groups[:, None] == groups[None, :]
        off = ~torch.eye(64, dtype=torch.bool)
        return (c[:, None] == c[None, :]).float().mean(-1)[same & off].mean()

    assert same_group_agreement(collab.codes) > same_group_agreement(plain.codes) + 0.1


def test_collaborative_tokenizer_round_trips_and_text_only_is_unchanged(tmp_path):
    text, cf = _items()
    has_cf = torch.arange(len(text)) % 3 != 0
    tok = _collab_tokenizer(text, cf, has_cf)
    tok.build_table(text, cf, has_cf)
    tok.save_pretrained(tmp_path / "tok")
    back = load(tmp_path / "tok")
    assert back.config.cf_dim == C and torch.equal(back.codes, tok.codes)
    assert torch.equal(back.cf_map, tok.cf_map) and torch.equal(back.encode(text), tok.encode(text))
    # cf_dim=0 keeps the text-only tokenizer: no CF parameters, CF input refused
    plain = ItemTokenizer(ItemTokenizerConfig.tiny(E))
    assert not hasattr(plain, "cf_map") and not any("cf" in k for k in plain.state_dict())
    with pytest.raises(ValueError, match="cf_dim=0"):
        plain.encode(text, cf)
    with pytest.raises(ValueError, match="cf_dim"):
        ItemTokenizerConfig(cf_dim=-1)


def test_pipeline_trains_collaborative_codes(tmp_path):
    from recsys.train import train_item_tokenizer

    text, cf = _items(40)
    has_cf = torch.arange(40) >= 10
    cfg = replace(ItemTokenizerConfig.tiny(E, cf_dim=C), max_suffix=64)
    tok = train_item_tokenizer(text, cfg, tmp_path, steps=3, batch_size=16, progress=False, cf=cf, has_cf=has_cf)
    assert torch.equal(tok.codes[:10, :-1], tok.encode(text[:10]))  # cold rows: text only
    again = train_item_tokenizer(text, cfg, tmp_path, steps=3, progress=False, cf=cf, has_cf=has_cf)
    assert torch.equal(again.codes, tok.codes)
    with pytest.raises(ValueError, match="need CF vectors"):
        train_item_tokenizer(text, cfg, tmp_path / "x", steps=3, progress=False)


def _recgpt(id_embedding, n=30):
    torch.manual_seed(0)
    text = F.normalize(torch.randn(n, E), dim=-1)
    cfg = replace(RecGPTConfig.tiny(E), id_embedding=id_embedding, **{"tokenizer.max_suffix": 64})
    tok = ItemTokenizer(cfg.tokenizer).eval()
    tok.build_table(text)
    model = RecGPT(replace(cfg, tokenizer=tok.config))
    model.set_catalog(tok, text)
    return model.eval(), text


def test_recgpt_id_embedding_round_trips_and_new_items_get_zero_rows(tmp_path):
    model, text = _recgpt(True)
    assert model.id_emb.shape == (30, model.config.dim)
    with torch.no_grad():
        model.id_emb.normal_()
    hist = [[1, 2, 3], [4, 5]]
    before = model.score_all(hist)
    model.save_pretrained(tmp_path / "m")
    back = load(tmp_path / "m")
    assert back.config.id_embedding and torch.equal(back.id_emb, model.id_emb)
    torch.testing.assert_close(back.score_all(hist), before)
    # the id embedding changes the scores (it is used), and is absent when off
    with torch.no_grad():
        model.id_emb.zero_()
    assert not torch.allclose(model.score_all(hist), before)
    off, _ = _recgpt(False)
    assert off.id_emb is None and not any("id_emb" in k for k in off.state_dict())
    # zero-shot items: zero id rows; narrowing the catalog keeps each item's row
    back.add_items(text[:2])
    assert back.id_emb.shape[0] == 32 and not back.id_emb[30:].any()
    back.keep_items(torch.tensor([31, 4, 30]))
    assert torch.equal(back.id_emb[1], load(tmp_path / "m").id_emb[4])
    assert back.num_items == 3 and back.id_emb.shape[0] == 3


def test_recgpt_with_id_embedding_trains():
    model, _ = _recgpt(True)
    model.train()
    window = torch.tensor([[-1, 0, 1, 2, 3, 4, 5, 6, 7]] * 4)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    first = float(model(window).loss.detach())
    for _ in range(30):
        loss = model(window).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first and model.id_emb.grad is not None


def test_recipe_path_collaborative_codes_from_a_sasrec_and_zero_shot_items(tmp_path):
    """What recipes/recgpt.py --item-codes collaborative does, on tiny data: a SASRec supplies the CF vectors, items
    without training interactions are cold (text-only codes), and items of a new catalog are added from text."""
    import pandas as pd

    from recsys.catalog import Catalog, with_catalog
    from recsys.data import RecData, from_frames, leave_one_out
    from recsys.models.sasrec import SASRec
    from recsys.train import cf_source, train_item_tokenizer, warm_items

    rng = np.random.default_rng(0)
    rows = [(u, int(rng.integers(0, 16)), t) for u in range(40) for t in range(6)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": range(20), "title": [f"movie {i}" for i in range(20)]})  # 16..19: no interactions
    data = from_frames(inter, items)
    split = leave_one_out(data)
    warm = warm_items(split)
    trained_on = {int(i) for s in split.train_sequences() for i in s}
    assert warm.tolist() == [i in trained_on for i in range(20)] and not warm[16:].any()
    sas = cf_source(data, split, None, tmp_path / "sasrec", steps=3, progress=False)
    assert isinstance(sas, SASRec) and sas.num_items == 20
    text = F.normalize(torch.randn(20, E, generator=torch.Generator().manual_seed(1)), dim=-1)
    cfg = replace(ItemTokenizerConfig.tiny(E, cf_dim=sas.config.dim), max_suffix=64)
    tok = train_item_tokenizer(text, cfg, tmp_path / "tok", steps=3, batch_size=16, progress=False,
                               cf=sas.item_vectors().detach(), has_cf=warm)
    cold = (~warm).nonzero().squeeze(1)
    assert torch.equal(tok.codes[cold, :-1], tok.encode(text[cold]))
    model = RecGPT(replace(RecGPTConfig.tiny(E), tokenizer=tok.config))
    model.set_catalog(tok, text)
    model.eval()
    # a new catalog: two known items and three new ones, added from their text (their CF part predicted from it)
    new_text = F.normalize(torch.randn(3, E, generator=torch.Generator().manual_seed(2)), dim=-1)
    ids = ["3", "5", "n1", "n2", "n3"]
    texts = ["movie 3", "movie 5", "new a", "new b", "new c"]
    lookup = dict(zip(texts[2:], new_text))
    empty = np.zeros(0, dtype=np.int64)
    other = RecData(empty, empty, empty, [], ids, texts, "str")
    with_catalog(model, Catalog.from_data(data), other, embed=lambda t: torch.stack([lookup[x] for x in t]))
    assert model.num_items == 5 and torch.equal(model.items.codes[2:, :-1], tok.encode(new_text))
    assert model.score_all([[0, 1], [2]]).shape == (2, 5)
