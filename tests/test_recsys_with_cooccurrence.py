"""A recommender with a co-occurrence expert: the mix is the z-scored blend of the two (share 0 ranks as the model,
1 as co-occurrence), the similarities and the share round-trip through the model directory and follow catalog
changes, corrupt similarities are refused, and `fit_cooccurrence` chooses on validation cases only."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from gentok.checkpoint import CheckpointError
from gentok.config import replace
from recsys.blend import mix_scores
from recsys.data import from_frames, leave_one_out
from recsys.item_tokens import ItemTokenizer
from recsys.models.cooccurrence import Cooccurrence, CooccurrenceConfig
from recsys.models.recgpt import RecGPT, RecGPTConfig
from recsys.models.sasrec import SASRec, SASRecConfig
from recsys.models.with_cooccurrence import WithCooccurrence, WithCooccurrenceConfig, fit_cooccurrence
from recsys.saving import load_recommender, save_recommender

N = 20
TRAIN = [[0, 1, 2, 3, 4], [1, 2, 5, 6], [7, 8, 9, 0], [3, 4, 5, 10, 11, 12], [13, 14, 15, 16], [17, 18, 19, 2]]
HIST = [[0, 1], [5, 6, 7], [12, 13, 14, 15]]


@pytest.fixture
def sasrec():
    torch.manual_seed(0)
    return SASRec(SASRecConfig.tiny(num_items=N)).eval()


def test_the_mix_is_the_z_scored_blend_and_its_ends_rank_as_each_part(sasrec):
    model = WithCooccurrence.on(sasrec, TRAIN, CooccurrenceConfig(window=2, decay=0.8, alpha=0.5), share=0.3)
    assert not model.training  # as the wrapped model
    own, cooc = model.part_scores(HIST)
    torch.testing.assert_close(own, sasrec.score_all(HIST))
    torch.testing.assert_close(cooc, Cooccurrence(TRAIN, N, CooccurrenceConfig(2, 0.8, 0.5)).score_all(HIST))
    torch.testing.assert_close(model.score_all(HIST), mix_scores(own, cooc, 0.3).float())
    model.set_share(0.0)
    assert torch.equal(model.recommend(HIST, k=5)[0], sasrec.recommend(HIST, k=5)[0])
    model.set_share(1.0)
    ref = cooc.clone()
    for row, h in enumerate(HIST):
        ref[row, h] = float("-inf")
    top = model.recommend(HIST, k=2)[0]  # the two best co-occurring items (no ties among them here)
    assert torch.equal(top, ref.topk(2, dim=1).indices)


def test_the_model_directory_round_trips_scores_share_and_similarities(tmp_path, sasrec):
    model = WithCooccurrence.on(sasrec, TRAIN, CooccurrenceConfig(window=3), share=0.4)
    data = from_frames(pd.DataFrame({"user_id": [0] * N, "item_id": [f"i{i}" for i in range(N)]}))
    save_recommender(model, tmp_path / "m", data)
    back, ids, _ = load_recommender(tmp_path / "m")
    assert type(back) is WithCooccurrence and type(back.model) is SASRec and list(ids) == list(data.item_ids)
    assert back.config.share == 0.4 and back.config.window == 3 and back.config.pairs == model.config.pairs > 0
    torch.testing.assert_close(back.score_all(HIST), model.score_all(HIST))
    # a fresh process, where nothing imported the wrapped model's module yet (the registry imports it lazily)
    code = ("from recsys.saving import load_recommender; import sys; "
            "m, _, _ = load_recommender(sys.argv[1]); print(type(m.model).__name__, m.config.share)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m")], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0 and r.stdout.split() == ["SASRec", "0.4"], r.stderr[-2000:]


def test_corrupt_or_foreign_similarities_are_refused(tmp_path, sasrec):
    model = WithCooccurrence.on(sasrec, TRAIN)
    model.sim_values[0] = -1.0
    model._cooc = None
    with pytest.raises(ValueError, match="corrupt"):
        model.score_all(HIST)
    model.sim_values[0] = 1.0
    model.save_pretrained(tmp_path / "m")
    import json

    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["config"]["pairs"] += 1  # the weights hold fewer entries than the config says
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match"):
        WithCooccurrence.from_pretrained(tmp_path / "m")


def test_keep_items_keeps_both_parts_of_the_kept_items(sasrec):
    model = WithCooccurrence.on(sasrec, TRAIN, CooccurrenceConfig(window=0, decay=1.0))
    rows = torch.tensor([2, 0, 1, 5, 6, 7, 3, 4])
    before_own, before_cooc = model.part_scores([[0, 1], [5, 6]])
    model.keep_items(rows)
    assert model.num_items == 8 and model.config.model.num_items == 8
    new = {int(r): i for i, r in enumerate(rows)}
    own, cooc = model.part_scores([[new[0], new[1]], [new[5], new[6]]])
    torch.testing.assert_close(own, before_own[:, rows])
    torch.testing.assert_close(cooc, before_cooc[:, rows])


def test_added_items_co_occur_with_nothing_until_an_update_sees_them():
    torch.manual_seed(0)
    text = F.normalize(torch.randn(N, 24), dim=-1)
    cfg = replace(RecGPTConfig.tiny(24), **{"tokenizer.max_suffix": 64})
    tok = ItemTokenizer(cfg.tokenizer).eval()
    tok.build_table(text)
    recgpt = RecGPT(replace(cfg, tokenizer=tok.config))
    recgpt.set_catalog(tok, text)
    model = WithCooccurrence.on(recgpt.eval(), TRAIN)
    idx = model.add_items(F.normalize(torch.randn(2, 24), dim=-1))
    assert idx.tolist() == [N, N + 1] and model.num_items == N + 2 == model.config.model.tokenizer.num_items
    assert torch.all(model.part_scores(HIST)[1][:, idx] == 0)
    model.update(TRAIN + [[0, N, 1, N + 1]])
    assert torch.all(model.part_scores([[0, 1]])[1][:, idx] > 0)


def test_fit_chooses_on_validation_only_and_finds_a_planted_neighbour_signal(monkeypatch):
    # each user walks a ring of items: the next item always follows the last one, which co-occurrence reads off
    rng = np.random.default_rng(0)
    rows = []
    for u in range(40):
        start = int(rng.integers(0, N))
        rows += [(u, f"i{(start + t) % N}", t) for t in range(8)]
    data = from_frames(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))
    split = leave_one_out(data)
    torch.manual_seed(0)
    sasrec = SASRec(SASRecConfig.tiny(num_items=data.num_items)).eval()  # untrained: no signal
    cases = split.cases

    def valid_only(which):
        assert which == "valid", "the test cases were requested"
        return cases(which)

    monkeypatch.setattr(split, "cases", valid_only)
    model, report = fit_cooccurrence(sasrec, split, grid=(0.0, 0.5, 1.0),
                                     search={"windows": (1, 0), "decays": (1.0, 0.5), "alphas": (0.5,)})
    curve = dict(report["share_curve_valid"])
    assert report["share"] == model.config.share == max(curve, key=lambda s: (curve[s], -s)) > 0
    assert curve[report["share"]] > curve[0.0] + 0.3  # the planted signal, against the untrained model
    assert report["cooccurrence"]["window"] == 1 == model.config.window  # neighbours, as planted
    assert model.model is sasrec and report["valid_cases"] == 40
    _, small = fit_cooccurrence(sasrec, split, grid=(0.0, 1.0), search={"windows": (1,), "decays": (1.0,),
                                                                        "alphas": (0.5,)}, max_cases=7)
    assert small["valid_cases"] == 7  # a seeded subset of the validation cases, never more


def test_bad_builds_say_what_is_wrong(sasrec):
    with pytest.raises(ValueError, match="wrapped model"):
        WithCooccurrence(WithCooccurrenceConfig())
    with pytest.raises(ValueError, match="share"):
        WithCooccurrenceConfig(model_type="recsys.sasrec", model=sasrec.config, share=1.5)
    wrapped = WithCooccurrence.on(sasrec, TRAIN)
    with pytest.raises(TypeError, match="registered recommender"):
        WithCooccurrence.on(wrapped, TRAIN)
    with pytest.raises(ValueError, match="item indices"):
        wrapped.update([[0, N]])
