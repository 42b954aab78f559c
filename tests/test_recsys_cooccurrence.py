"""Item co-occurrence (recsys.models.cooccurrence) and its mix with a model (recsys.blend.mix_scores): counts and
scores equal hand computation, a cold item that co-occurs with the user's items outranks one that does not, scoring
is per user (batched == one by one) and never sees a target, and the mix's limits are exactly its two sources."""

import numpy as np
import pytest
import torch

from recsys.blend import calibrate_share, mix_scores, standardize, target_ranks_of
from recsys.models.cooccurrence import (
    Cooccurrence,
    CooccurrenceConfig,
    calibrate_cooccurrence,
    cooccurrence_counts,
)

HISTS = [[0, 1, 2], [1, 2, 3], [4, 0, 4]]


def test_counts_equal_hand_computation():
    c1 = cooccurrence_counts(HISTS, 6, window=1).toarray()
    want = np.zeros((6, 6))
    for j, k, v in [(0, 1, 1), (1, 2, 2), (2, 3, 1), (4, 0, 2)]:  # neighbour pairs; [4, 0, 4] pairs 0 with 4 twice
        want[j, k] = want[k, j] = v
    np.testing.assert_array_equal(c1, want)
    c0 = cooccurrence_counts(HISTS, 6, window=0).toarray()  # anywhere in a history
    for j, k, v in [(0, 2, 1), (1, 3, 1)]:
        want[j, k] = want[k, j] = v
    np.testing.assert_array_equal(c0, want)  # 4 next to 4 (a repeat) is not a pair: the diagonal stays 0
    # a window as long as every history is the whole history
    np.testing.assert_array_equal(cooccurrence_counts(HISTS, 6, window=2).toarray(), c0)


def test_scores_equal_hand_computation():
    cfg = CooccurrenceConfig(window=1, decay=0.5, alpha=0.7)
    model = Cooccurrence(HISTS, 6, cfg)
    n = np.maximum(np.bincount(np.concatenate(HISTS), minlength=6), 1).astype(float)
    c = cooccurrence_counts(HISTS, 6, window=1).toarray()
    sim = c / (n[:, None] ** 0.7 * n[None, :] ** 0.3)
    query = [3, 1]  # 1 is the most recent item (weight 1), 3 the one before (weight 0.5)
    want = 0.5 * sim[3] + 1.0 * sim[1]
    np.testing.assert_allclose(model.score_all([query])[0].numpy(), want, rtol=1e-6)


def test_cold_item_that_cooccurs_outranks_a_more_popular_one():
    # item 5 is cold for a model, and co-occurs with 0; item 6 is far more popular but never next to 0 or 1
    hists = [[0, 5], [6, 7], [7, 6], [6, 2], [3, 6], [1, 2]]
    model = Cooccurrence(hists, 8, CooccurrenceConfig(window=1))
    s = model.score_all([[1, 0]])[0]
    assert s[5] > s[6] == 0
    assert s[5] > 0 and s[2] > 0  # 2 co-occurs with 1


def test_batched_equals_one_by_one_and_history_order_of_fit_is_irrelevant():
    rng = np.random.default_rng(0)
    hists = [rng.integers(0, 20, size=rng.integers(1, 9)).tolist() for _ in range(15)]
    model = Cooccurrence(hists, 20)
    batched = model.score_all(hists)
    one = torch.cat([model.score_all([h]) for h in hists])
    torch.testing.assert_close(batched, one)
    shuffled = Cooccurrence([hists[i] for i in rng.permutation(len(hists))], 20)
    torch.testing.assert_close(shuffled.score_all(hists), batched)


def test_targets_are_never_used():
    # the scorer is built from histories alone: an item that occurs only as a target co-occurs with nothing (scores
    # 0 for everyone), and calibrating on other targets of the same histories chooses among the same scores
    hists = [[0, 1, 2], [2, 3], [1, 3, 0]]
    assert not bool(Cooccurrence(hists, 6).score_all(hists)[:, 5].any())
    grid = {"windows": (1, 0), "decays": (1.0, 0.5), "alphas": (0.5,)}
    _, curve_a = calibrate_cooccurrence(hists, [5, 5, 5], 6, metric_k=1, **grid)
    _, curve_b = calibrate_cooccurrence(hists + [[4]], [3, 0, 2, 5], 6, **grid)
    assert all(p["recall"] == 0 for p in curve_a)  # nothing can find an item seen in no history
    assert [(p["window"], p["decay"]) for p in curve_b] == [(1, 1.0), (1, 0.5), (0, 1.0), (0, 0.5)]


def test_calibration_is_the_best_grid_point_by_enumeration():
    # histories walk a chain 0 -> 1 -> 2 ... with noise items; each curve point equals the metric of that config
    # computed here, and the chosen config is the curve's best (ties to the earlier point)
    rng = np.random.default_rng(1)
    hists = [list(range(s, s + 5)) + rng.integers(20, 30, size=2).tolist() + [s + 5] for s in range(12)]
    targets = np.array([s + 6 for s in range(12)])
    cfg, curve = calibrate_cooccurrence(hists, targets, 30, windows=(0, 1), decays=(1.0, 0.5), alphas=(0.5, 1.0))
    assert len(curve) == 8
    for p in curve:
        scores = Cooccurrence(hists, 30, CooccurrenceConfig(p["window"], p["decay"], p["alpha"])).score_all(hists)
        ranks = target_ranks_of(scores, hists, targets)
        assert p["recall"] == pytest.approx(float((ranks <= 10).mean()))
        assert p["ndcg"] == pytest.approx(float(np.where(ranks <= 10, 1 / np.log2(ranks + 1), 0).mean()))
    best = max(p["ndcg"] for p in curve)
    first = next(p for p in curve if p["ndcg"] == best)
    assert (cfg.window, cfg.decay, cfg.alpha) == (first["window"], first["decay"], first["alpha"])
    # on a clean chain the neighbour window with recency ranks the next item first (but for the last history,
    # whose target occurs in no history), where the whole history without recency ties the item before the chain
    hists = [list(range(s, s + 6)) for s in range(12)]
    targets = np.array([s + 6 for s in range(12)])
    for window, decay, first_everywhere in ((1, 0.5, True), (0, 1.0, False)):
        scores = Cooccurrence(hists, 30, CooccurrenceConfig(window, decay, 0.5)).score_all(hists)
        assert bool((target_ranks_of(scores, hists, targets)[:-1] == 1).all()) == first_everywhere


@pytest.mark.parametrize("kw", [{"window": -1}, {"window": 1.5}, {"decay": 0.0}, {"decay": 1.2}, {"alpha": -0.1}])
def test_bad_config_is_refused(kw):
    with pytest.raises(ValueError):
        CooccurrenceConfig(**kw)


def test_bad_histories_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        Cooccurrence([[0, 4]], 4)
    model = Cooccurrence([[0, 1]], 4)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        model.score_all([[-1]])


def test_mix_limits_are_the_sources_and_cold_items_take_the_other_source():
    g = torch.Generator().manual_seed(0)
    model, other = torch.randn(4, 10, generator=g) * 5, torch.rand(4, 10, generator=g)
    cold = torch.zeros(10, dtype=torch.bool)
    cold[[2, 7]] = True
    torch.testing.assert_close(mix_scores(model, other, 0.0), standardize(model))
    torch.testing.assert_close(mix_scores(model, other, 1.0), standardize(other))
    m = mix_scores(model, other, 0.0, cold)
    torch.testing.assert_close(m[:, ~cold], standardize(model)[:, ~cold])
    torch.testing.assert_close(m[:, cold], standardize(other)[:, cold])
    model[0, 3] = float("-inf")  # a share of 1 never consults the model
    assert bool(torch.isfinite(mix_scores(model, other, 1.0)).all())
    with pytest.raises(ValueError, match="share"):
        mix_scores(model, other, 1.5)
    with pytest.raises(ValueError, match="one shape"):
        mix_scores(model, other[:, :5], 0.5)


def test_calibrate_share_picks_the_better_source():
    # the other source ranks every target first, the model last: the share must go to the other source
    b, n = 6, 12
    targets = np.arange(b) + 3
    other = torch.zeros(b, n)
    other[torch.arange(b), torch.as_tensor(targets)] = 1.0
    model = -other + 0.01 * torch.arange(n)
    share, curve = calibrate_share(model, other, [[0]] * b, targets, grid=(0.0, 0.5, 1.0))
    assert share > 0 and curve[0][1] < curve[-1][1] == 1.0
