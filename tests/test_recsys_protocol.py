"""Split, metrics and loaders of recsys against hand-computed examples."""

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.data import from_frames, leave_one_out, load_data
from recsys.metrics import bootstrap_ci, metrics_from_ranks, target_ranks


def _data(rows):
    return from_frames(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))


def test_leave_one_out_orders_by_time_and_keeps_short_users():
    d = _data([("u1", 10, 3), ("u1", 11, 1), ("u1", 12, 2), ("u1", 13, 4),
               ("u2", 10, 5), ("u2", 12, 1),
               ("u3", 11, 7)])
    s = leave_one_out(d)
    idx = {int(v): i for i, v in enumerate(d.item_ids)}
    u1 = d.user_ids.index("u1")
    assert s.sequences[u1].tolist() == [idx[11], idx[12], idx[10], idx[13]]
    assert s.train_sequences()[u1].tolist() == [idx[11], idx[12]]
    users, hists, targets = s.cases("test")
    # u2 (two items) has a test case; u3 (one item) has none but is reported, not lost
    assert sorted(d.user_ids[u] for u in users) == ["u1", "u2"]
    u2 = d.user_ids.index("u2")
    assert hists[users.index(u2)].tolist() == [idx[12]] and targets[users.index(u2)] == idx[10]
    vusers, vh, vt = s.cases("valid")
    assert [d.user_ids[u] for u in vusers] == ["u1"] and vt.tolist() == [idx[10]]
    assert s.too_short == [d.user_ids.index("u3")]
    assert s.summary() == {"users": 3, "valid_cases": 1, "test_cases": 2, "too_short": 1}


def test_equal_timestamps_are_broken_by_seed_reproducibly():
    rows = [("u", i, 0) for i in range(6)]
    a = leave_one_out(_data(rows), seed=1).sequences[0].tolist()
    assert a == leave_one_out(_data(rows), seed=1).sequences[0].tolist()
    orders = {tuple(leave_one_out(_data(rows), seed=s).sequences[0].tolist()) for s in range(8)}
    assert len(orders) > 1 and all(sorted(o) == list(range(6)) for o in orders)


def test_ranks_metrics_and_ties_by_hand():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.5],  # target 2 ties with item 3 -> rank 3 (ties count against)
                           [0.3, 0.3, 0.3, 0.3],  # constant scores: the target ranks last, never first
                           [0.9, 0.1, 0.8, 0.0]])
    targets = torch.tensor([2, 0, 2])
    exclude = torch.tensor([[False, True, False, False], [False] * 4, [True, False, True, False]])
    assert target_ranks(scores, targets).tolist() == [3, 4, 2]
    # excluding item 1 drops one competitor; the target itself is never excluded
    assert target_ranks(scores, targets, exclude).tolist() == [2, 4, 1]
    m = metrics_from_ranks(np.array([1, 3, 7, 30]), ks=(5, 10))
    assert m["recall@5"].tolist() == [1, 1, 0, 0] and m["recall@10"].tolist() == [1, 1, 1, 0]
    np.testing.assert_allclose(m["ndcg@5"], [1.0, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(m["ndcg@10"], [1.0, 0.5, 1 / np.log2(8), 0.0])
    np.testing.assert_allclose(m["mrr@10"], [1.0, 1 / 3, 1 / 7, 0.0])


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_data():
    rng = np.random.default_rng(0)
    small, big = rng.random(50) < 0.3, rng.random(5000) < 0.3
    lo, hi = bootstrap_ci(small)
    assert lo <= small.mean() <= hi
    lo2, hi2 = bootstrap_ci(big)
    assert hi2 - lo2 < hi - lo
    assert bootstrap_ci(np.ones(10)) == (1.0, 1.0)


def test_loaders_csv_parquet_recbole(tmp_path):
    inter = pd.DataFrame({"user_id": ["a", "a", "b"], "item_id": [5, 7, 5], "timestamp": [1, 2, 3],
                          "title": ["Five", "Seven", "Five"]})
    inter.to_csv(tmp_path / "x.csv", index=False)
    inter.to_parquet(tmp_path / "x.parquet")
    for p in ("x.csv", "x.parquet"):
        d = load_data(str(tmp_path / p))
        assert d.item_ids == ["5", "7"] and d.item_text == ["Five", "Seven"] and d.id_kind == "int"
    rb = tmp_path / "rb"
    rb.mkdir()
    (rb / "ml.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                 "1\tm1\t4\t10\n1\tm2\t3\t11\n2\tm1\t5\t9\n")
    (rb / "ml.item").write_text("item_id:token\tmovie_title:token_seq\tclass:token_seq\n"
                                "m1\tAlien\tHorror\nm2\tHeat\tCrime\nm3\tUnseen\tDrama\n")
    d = load_data(str(rb))
    assert d.item_ids == ["m1", "m2", "m3"] and d.item_text[0] == "Alien. Horror" and d.id_kind == "str"
    assert d.summary() == {"users": 2, "items": 3, "interactions": 3}
    with pytest.raises(ValueError, match="no item id column"):
        from_frames(pd.DataFrame({"user_id": [1], "thing": [2]}))
    bad = tmp_path / "bad.inter"
    bad.write_text("user_id\titem_id\n1\t2\n")
    with pytest.raises(ValueError, match="name:type"):
        load_data(str(bad))


def test_id_kinds_follow_the_format(tmp_path):
    from recsys.data import DataError
    from recsys.ids import id_string, is_canonical_int

    assert [is_canonical_int(s) for s in ("42", "-7", "0", "007", "4.0", " 4", "x", "", "9" * 20)] == \
        [True, True, True, False, False, False, False, False, False]
    assert id_string(42) == id_string(42.0) == id_string(np.int64(42)) == "42" and id_string("m1") == "m1"
    # text formats: canonical integers are integer ids, "007" keeps its spelling as a string id
    (tmp_path / "a.csv").write_text("user_id,item_id\n1,5\n1,7\n2,5\n")
    (tmp_path / "b.csv").write_text("user_id,item_id\n1,005\n1,7\n2,005\n")
    assert load_data(str(tmp_path / "a.csv")).id_kind == "int"
    b = load_data(str(tmp_path / "b.csv"))
    assert b.id_kind == "str" and b.item_ids == ["005", "7"]
    # typed formats keep their type: numeric-looking strings in Parquet are strings, whole floats are integers
    pd.DataFrame({"user_id": [1, 1], "item_id": ["5", "7"]}).to_parquet(tmp_path / "s.parquet")
    pd.DataFrame({"user_id": [1, 1], "item_id": [5.0, 7.0]}).to_parquet(tmp_path / "f.parquet")
    assert load_data(str(tmp_path / "s.parquet")).id_kind == "str"
    f = load_data(str(tmp_path / "f.parquet"))
    assert f.id_kind == "int" and f.item_ids == ["5", "7"]
    # an items file with string ids makes the catalog's ids strings
    d = tmp_path / "dir"
    d.mkdir()
    (d / "interactions.csv").write_text("user_id,item_id\n1,5\n1,7\n")
    (d / "items.csv").write_text("item_id,title\n5,Five\n7,Seven\nx9,Nine\n")
    dd = load_data(str(d))
    assert dd.id_kind == "str" and dd.item_text == ["Five", "Seven", "Nine"]
    with pytest.raises(DataError, match="does not exist"):
        load_data(str(tmp_path / "nothing.csv"))
