"""RecGPT on SASRec: the pooled scores are the two models' catalog-normalized log-probabilities mixed by the
generative weight (w = 0 ranks as SASRec, w = 1 as RecGPT), the weight is the validation-NLL minimizer of its grid,
recommendations are the exact top-k, the catalog can change, and the model round-trips through its directory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gentok import load
from gentok.config import replace
from recsys.item_tokens import ItemTokenizer
from recsys.models.recgpt import RecGPT, RecGPTConfig
from recsys.models.recgpt_sasrec import RecGPTSASRec, select_gen_weight
from recsys.models.sasrec import SASRec, SASRecConfig

E, N = 24, 30
HIST = [[1, 2, 3], [4, 5], [7, 8, 9, 10, 11]]


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    text = F.normalize(torch.randn(N, E), dim=-1)
    cfg = replace(RecGPTConfig.tiny(E), **{"tokenizer.max_suffix": 64})
    tok = ItemTokenizer(cfg.tokenizer).eval()
    tok.build_table(text)
    recgpt = RecGPT(replace(cfg, tokenizer=tok.config))
    recgpt.set_catalog(tok, text)
    with torch.no_grad():  # random but not uniform decoders, so RecGPT's ranking is informative
        for head in recgpt.dec_head:
            head.weight.normal_(0, 1.0)
    sasrec = SASRec(SASRecConfig.tiny(num_items=N)).eval()
    return recgpt.eval(), sasrec, text


def pooled(parts, w=0.5):
    recgpt, sasrec, _ = parts
    model = RecGPTSASRec.on(recgpt, sasrec).eval()
    model.gen_weight.fill_(w)
    return model


def test_the_ends_of_the_weight_rank_as_sasrec_and_as_recgpt(parts):
    recgpt, sasrec, _ = parts
    model = pooled(parts)
    sas, gen = model.part_scores(HIST)
    torch.testing.assert_close(sas, torch.log_softmax(sasrec.score_all(HIST), 1))
    torch.testing.assert_close(gen, recgpt.score_all(HIST))
    torch.testing.assert_close(model.score_all(HIST), 0.5 * sas + 0.5 * gen)
    for w, ref in ((0.0, sasrec), (1.0, recgpt)):
        model.gen_weight.fill_(w)
        assert torch.equal(model.recommend(HIST, k=5)[0], ref.recommend(HIST, k=5)[0])


def test_recommend_is_the_exact_top_k_of_the_pooled_scores_without_seen_items(parts):
    model = pooled(parts, 0.3)
    items, scores = model.recommend(HIST, k=6)
    full = model.score_all(HIST)
    for row, h in enumerate(HIST):
        full[row, h] = float("-inf")
    assert torch.equal(items, full.topk(6, dim=1).indices)
    assert not any(set(items[r].tolist()) & set(h) for r, h in enumerate(HIST))


def test_the_weight_is_the_validation_nll_minimizer_of_its_grid(parts):
    model = pooled(parts)
    rng = np.random.default_rng(0)
    hists = [rng.choice(N, size=int(rng.integers(2, 6)), replace=False).tolist() for _ in range(12)]
    targets = [int(rng.choice([i for i in range(N) if i not in h])) for h in hists]
    grid = (0.0, 0.25, 0.5, 0.75, 1.0)
    out = select_gen_weight(model, hists, targets, grid, batch_size=5)
    sas, gen = model.part_scores(hists)
    for w in grid:  # by hand: renormalize over each user's unseen items, mean NLL of the target
        nll = []
        for r, (h, t) in enumerate(zip(hists, targets)):
            s = (1 - w) * sas[r] + w * gen[r]
            s[h] = float("-inf")
            nll.append(-float(torch.log_softmax(s, 0)[t]))
        assert out["nll"][w] == pytest.approx(np.mean(nll), rel=1e-5)
    assert out["weight"] == min(grid, key=lambda w: out["nll"][w]) == pytest.approx(float(model.gen_weight))
    assert out["cases"] == 12 and set(out["ndcg@10"]) == set(grid)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        select_gen_weight(model, hists, targets, (0.5, 1.5))
    with pytest.raises(ValueError, match="same, non-zero"):
        select_gen_weight(model, hists, targets[:3])


def test_new_items_are_ranked_by_recgpt_and_kept_items_keep_their_scores(parts):
    recgpt, sasrec, text = parts
    model = pooled(parts, 0.4)
    before = model.score_all(HIST)
    rows = torch.tensor([11, 1, 2, 3, 4, 5, 7, 8, 9, 10, 0])
    model.keep_items(rows)
    assert torch.equal(model.cf, sasrec.item_vectors().detach()[rows]) and model.num_items == 11
    assert recgpt.num_items == N  # the pooled model holds copies: the RecGPT it was built from is unchanged
    remap = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 0]]  # HIST in the new indices
    after = model.score_all(remap)
    torch.testing.assert_close(after, before[:, rows])  # kept items keep their scores
    idx = model.add_items(F.normalize(torch.randn(2, E, generator=torch.Generator().manual_seed(3)), dim=-1))
    assert idx.tolist() == [11, 12] and model.has_cf.tolist() == [True] * 11 + [False] * 2
    sas, gen = model.part_scores(remap)
    assert torch.equal(sas[:, 11:], gen[:, 11:])  # no SASRec row: the generative model's log-probability
    torch.testing.assert_close(model.score_all(remap)[:, :11], after)  # added items change no other score


def test_round_trip_and_bad_pairs(parts, tmp_path):
    recgpt, sasrec, _ = parts
    model = pooled(parts, 0.35)
    model.save_pretrained(tmp_path / "m")
    back = load(tmp_path / "m")
    assert type(back) is RecGPTSASRec and float(back.gen_weight) == pytest.approx(0.35)
    torch.testing.assert_close(back.score_all(HIST), model.score_all(HIST))
    with pytest.raises(ValueError, match="same catalog"):
        RecGPTSASRec.on(recgpt, SASRec(SASRecConfig.tiny(num_items=N + 1)))
    with pytest.raises(TypeError, match="needs a RecGPT"):
        RecGPTSASRec.on(model, sasrec)
    with pytest.raises(ValueError, match="has_cf"):
        RecGPTSASRec.on(recgpt, sasrec, has_cf=torch.ones(N))
    from recsys.models.recgpt_sasrec import RecGPTSASRecConfig

    bare = RecGPTSASRec(RecGPTSASRecConfig(**vars(recgpt.config)))  # a config alone: no SASRec to pool with
    bare.set_catalog(recgpt.items, recgpt.text)
    with pytest.raises(ValueError, match=r"RecGPTSASRec.on\(recgpt, sasrec\)"):
        bare.score_all(HIST)


def test_recgpt_label_smoothing_is_the_smoothed_code_cross_entropy(parts):
    recgpt, _, _ = parts
    model = RecGPTSASRec.on(recgpt, parts[1]).eval()  # a copy: the fixture's RecGPT is left as it is
    window = torch.tensor([[-1, 0, 1, 2, 3, 4, 5, 6, 7], [3, 4, 5, 6, 7, 8, 9, 10, 11]])
    ids, targets = window[:, :-1], window[:, 1:]
    with torch.no_grad():
        state = model.contexts(ids, ids >= 0)[(ids >= 0) & (targets >= 0)]
        tgt = model.items.codes[targets[(ids >= 0) & (targets >= 0)]]
        nll, uniform = 0.0, 0.0
        for level in range(model.L):  # by hand: the code levels' NLL and their mean negative log-probability
            logp = model.decode_logprobs(state, level)
            nll += -logp.gather(1, tgt[:, level:level + 1]).mean()
            uniform += -logp.mean()
            state = model.decode_advance(state, tgt[:, level], level) if level < model.L - 1 else state
        torch.testing.assert_close(model(window).loss, nll)
        model.config = replace(model.config, label_smoothing=0.2)
        torch.testing.assert_close(model(window).loss, 0.8 * nll + 0.2 * uniform)
    with pytest.raises(ValueError, match="label_smoothing"):
        RecGPTConfig(label_smoothing=1.0)
