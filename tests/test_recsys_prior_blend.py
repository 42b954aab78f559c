"""The popularity-prior blend (recsys.blend): its two limits are exactly popularity and exactly the model, the cold
bonus moves cold items only as a block, calibration picks the best validation point under its constraint, and the
calibration survives a JSON round trip."""

import itertools

import numpy as np
import pytest
import torch

from recsys.blend import (
    BlendCalibration,
    PopularityBlend,
    blend_scores,
    calibrate_cold_bonus,
    calibrate_weight,
    standardize,
    target_ranks_of,
)
from recsys.metrics import metrics_from_ranks
from recsys.models.base import Recommender
from recsys.models.popularity import Popularity, history_counts

N = 30


def _all_ranks(scores: torch.Tensor) -> torch.Tensor:
    """(b, N) rank of every item (1 = best, ties against the item), as the metrics count them."""
    s = scores.double()
    return (s[:, None, :] >= s[:, :, None]).sum(-1)


def _case(b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = torch.randn(b, N, generator=g) * 3 + 1  # any scale: the blend standardizes it
    counts = torch.randint(0, 6, (N,), generator=g).numpy()  # ties on purpose
    return model, counts


class Fixed(Recommender, torch.nn.Module):
    """A recommender that returns given scores (one row per history, by the history's first item)."""

    def __init__(self, scores):
        super().__init__()
        self.s = scores

    @property
    def num_items(self):
        return self.s.shape[1]

    def score_all(self, histories):
        return self.s[[int(h[0]) for h in histories]]


def test_weight_zero_is_popularity_exactly():
    model, counts = _case()
    model[0, 3] = float("-inf")  # not even an item the model cannot rank changes popularity's order
    blended = blend_scores(model, counts, 0.0)
    pop = Popularity(counts).score_all([[0]] * len(model))
    assert torch.equal(_all_ranks(blended), _all_ranks(pop))


def test_huge_weight_is_the_model_ranking():
    model, counts = _case(seed=1)
    assert torch.equal(_all_ranks(blend_scores(model, counts, 1e9)), _all_ranks(model))
    # where the model ties, popularity breaks the tie
    model[:, 1] = model[:, 2]
    counts[1], counts[2] = 5, 0
    r = _all_ranks(blend_scores(model, counts, 1e9))
    assert bool((r[:, 1] < r[:, 2]).all())


def test_standardize_is_scale_free_and_keeps_minus_inf():
    model, _ = _case(seed=2)
    assert torch.allclose(standardize(model), standardize(model * 7.5 - 3), atol=1e-12)
    model[0, 0] = float("-inf")
    z = standardize(model)
    assert z[0, 0] == float("-inf") and torch.isfinite(z[0, 1:]).all()
    assert abs(float(z[0, 1:].mean())) < 1e-12 and abs(float(z[0, 1:].std(unbiased=False)) - 1) < 1e-12


def test_cold_bonus_moves_cold_items_only_as_a_block():
    model, counts = _case(seed=3)
    cold = np.zeros(N, dtype=bool)
    cold[::4] = True
    base = blend_scores(model, counts, 0.7, cold, 0.3, 0.0)
    for bonus in (-3.0, -0.5, 0.25, 1.0, 40.0):
        s = blend_scores(model, counts, 0.7, cold, 0.3, bonus)
        for group in (~cold, cold):  # order inside each group: unchanged by the bonus
            assert torch.equal(_all_ranks(s[:, group]), _all_ranks(base[:, group]))
        assert torch.equal(s[:, ~cold], base[:, ~cold])
    # warm items are ordered by `weight` alone, cold items by `cold_weight` alone
    warm_only = blend_scores(model, counts, 0.7)
    assert torch.equal(_all_ranks(base[:, ~cold]), _all_ranks(warm_only[:, ~cold]))
    cold_only = blend_scores(model, counts, 0.3)
    assert torch.equal(_all_ranks(base[:, cold]), _all_ranks(cold_only[:, cold]))


def _ndcg10(scores, hists, targets):
    return float(metrics_from_ranks(target_ranks_of(scores, hists, targets), ks=(10,))["ndcg@10"].mean())


def test_calibrate_weight_picks_the_best_validation_point():
    # 40 users: popularity alone finds the targets of the first half, the model alone those of the second half;
    # a small model weight keeps popularity's hits and adds some of the model's
    b, g = 40, torch.Generator().manual_seed(0)
    counts = np.arange(N)[::-1].copy()  # item 0 most popular
    model = torch.randn(b, N, generator=g)
    targets = np.where(np.arange(b) < b // 2, 0, 25)
    model[b // 2:, 25] += 4.0  # the model finds the unpopular item 25 for the second half
    hists = [[N - 1]] * b
    grid = (0.0, 0.1, 0.3, 1.0, 3.0, 100.0)
    w, curve = calibrate_weight(model, counts, hists, targets, grid=grid)
    brute = {x: _ndcg10(blend_scores(model, counts, x), hists, targets) for x in grid}
    assert [v for _, v in curve] == [brute[x] for x in sorted(grid)]
    assert brute[w] == max(brute.values()) and all(brute[x] < brute[w] for x in grid if x < w)
    assert 0 < w < 100.0  # neither limit: the blend beats both popularity and the model here
    assert brute[w] > brute[0.0] and brute[w] > brute[100.0]
    # ranking among a subset: items outside it cannot outrank the target
    only = np.zeros(N, dtype=bool)
    only[20:] = True
    w2, _ = calibrate_weight(model[b // 2:], counts, hists[b // 2:], targets[b // 2:], grid=grid, items=only)
    assert w2 > 0


def test_calibrate_cold_bonus_best_cold_recall_within_the_warm_bound():
    model, counts = _case(b=60, seed=4)
    cold = np.zeros(N, dtype=bool)
    cold[:8] = True
    g = np.random.default_rng(0)
    targets = np.where(g.random(60) < 0.3, g.integers(0, 8, 60), g.integers(8, N, 60))
    hists = [[int(x)] for x in g.integers(0, N, 60)]
    hists = [h if h[0] != t else [(t + 1) % N] for h, t in zip(hists, targets)]
    ref = 0.5
    bonus, curve, ok = calibrate_cold_bonus(model, counts, cold, hists, targets, 0.5, 0.5, ref, 0.05)
    feasible = [p for p in curve if p["warm"] >= 0.95 * ref]
    assert ok == bool(feasible)
    chosen = next(p for p in curve if p["bonus"] == bonus)
    if feasible:
        assert chosen["warm"] >= 0.95 * ref and chosen["cold"] == max(p["cold"] for p in feasible)
    # the grid read off the cases spans every mix: no cold item in any top 10, then more, up to all ten cold
    tops = [p["cold_in_top"] for p in curve]
    assert all(a <= b + 1e-12 for a, b in itertools.pairwise(tops))
    unseen_cold = np.mean([8 - len(set(h) & set(range(8))) for h in hists])
    assert tops[0] == 0 and tops[-1] == pytest.approx(unseen_cold)
    # a cold goal: the smallest feasible bonus that reaches it (never more bonus, so warm cost, than the best-cold
    # choice); an unreachable goal changes nothing
    low = 0.2  # a lower reference leaves several cold recalls feasible
    best, curve, _ = calibrate_cold_bonus(model, counts, cold, hists, targets, 0.5, 0.5, low, 0.05)
    feasible = [p for p in curve if p["warm"] >= 0.95 * low]
    reachable = sorted({p["cold"] for p in feasible})
    assert len(reachable) > 2
    for goal in reachable[1:]:
        b_goal, _, _ = calibrate_cold_bonus(model, counts, cold, hists, targets, 0.5, 0.5, low, 0.05, cold_goal=goal)
        assert b_goal == min(p["bonus"] for p in feasible if p["cold"] >= goal) <= best
    assert calibrate_cold_bonus(model, counts, cold, hists, targets, 0.5, 0.5, low, 0.05, cold_goal=2.0)[0] == best
    # an unreachable reference: nothing is feasible, the bonus that loses least on warm targets is chosen
    bonus, curve, ok = calibrate_cold_bonus(model, counts, cold, hists, targets, 0.5, 0.5, 2.0, 0.05)
    assert not ok and next(p for p in curve if p["bonus"] == bonus)["warm"] == max(p["warm"] for p in curve)


def test_calibration_json_round_trip_and_blend_recommender(tmp_path):
    model, counts = _case(seed=5)
    cold = np.zeros(N, dtype=bool)
    cold[[2, 7]] = True
    cal = BlendCalibration(0.3, 1.5, 0.75, chosen_on="validation", curves={"w": [[0.0, 0.1], [0.3, 0.2]]})
    cal.save(tmp_path / "cal.json")
    back = BlendCalibration.load(tmp_path / "cal.json")
    assert back == cal
    rec = PopularityBlend(Fixed(model), counts, back, cold)
    hists = [[i] for i in range(len(model))]
    assert torch.equal(rec.score_all(hists), blend_scores(model, counts, 0.3, cold, 1.5, 0.75))
    items, _ = rec.recommend(hists, k=5)
    assert not any(int(h[0]) in items[i].tolist() for i, h in enumerate(hists))  # seen items excluded


def test_history_counts():
    assert history_counts([[0, 2, 2], [1], np.array([2])], 4).tolist() == [1, 1, 3, 0]
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        history_counts([[0, 4]], 4)


def test_bad_inputs_raise_value_error(tmp_path):
    model, counts = _case(seed=6)
    with pytest.raises(ValueError, match="counts"):
        blend_scores(model, counts[:-1], 1.0)
    with pytest.raises(ValueError, match="counts"):
        blend_scores(model, -counts - 1, 1.0)
    with pytest.raises(ValueError, match="weight"):
        blend_scores(model, counts, -1.0)
    with pytest.raises(ValueError, match="NaN"):
        blend_scores(torch.full_like(model, float("nan")), counts, 1.0)
    with pytest.raises(ValueError, match="cold"):
        blend_scores(model, counts, 1.0, np.zeros(N - 1, dtype=bool))
    with pytest.raises(ValueError, match="cold_bonus"):
        BlendCalibration(1.0, None, float("inf"))
    with pytest.raises(ValueError, match="one of the items ranked"):
        target_ranks_of(model[:1], [[0]], [3], items=np.zeros(N, dtype=bool))
    with pytest.raises(ValueError, match="grid"):
        calibrate_weight(model, counts, [[0]] * len(model), np.ones(len(model), dtype=int), grid=())
    (tmp_path / "x.json").write_text('{"type": "something else"}')
    with pytest.raises(ValueError, match="not a popularity-blend"):
        BlendCalibration.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('{"type": "popularity_blend", "format_version": 1, "lambda": 2}')
    with pytest.raises(ValueError, match="unknown calibration fields"):
        BlendCalibration.load(tmp_path / "y.json")
    with pytest.raises(ValueError, match="cannot read"):
        BlendCalibration.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="counts"):
        PopularityBlend(Fixed(model), counts[:5], BlendCalibration())
