"""Batch scoring: resume == uninterrupted, two processes == one, malformed rows reported, pandas batch function."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.data import RecData
from recsys.models.sasrec import SASRec, SASRecConfig
from recsys.saving import save_recommender
from recsys.scoring import BatchScorer, score_file

N = 50


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("model") / "m"
    data = RecData(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), [], [str(100 + i) for i in range(N)],
                   [""] * N, "int")
    save_recommender(SASRec(SASRecConfig.tiny(num_items=N)).eval(), d, data)
    return d


def _histories(path, users=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        for t in range(int(rng.integers(1, 6))):
            rows.append((f"user{u}", 100 + int(rng.integers(0, N)), int(rng.integers(0, 1000))))
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).sample(frac=1.0, random_state=seed)
    df.to_csv(path, index=False)
    return df


def test_resumed_run_equals_uninterrupted(tmp_path, model_dir):
    inp = tmp_path / "h.csv"
    _histories(inp)
    full = score_file(model_dir, inp, tmp_path / "full.parquet", k=5, partitions=6, progress=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        score_file(model_dir, inp, tmp_path / "res.parquet", k=5, partitions=6, progress=False, _crash_after=2)
    assert not (tmp_path / "res.parquet").exists() and (tmp_path / "res.parquet.work").is_dir()
    # a half-written partition file left by the kill must not be trusted
    (tmp_path / "res.parquet.work" / ".out-00005.parquet.tmp").write_bytes(b"garbage")
    again = score_file(model_dir, inp, tmp_path / "res.parquet", k=5, partitions=6, progress=False)
    a, b = pd.read_parquet(tmp_path / "full.parquet"), pd.read_parquet(tmp_path / "res.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert full["users"] == again["users"] == 60 == a["user_id"].nunique()
    assert (a.groupby("user_id").size() <= 5).all() and a["rank"].min() == 1
    assert not (tmp_path / "res.parquet.work").exists()


def test_malformed_unknown_and_empty_rows_are_reported(tmp_path, model_dir):
    inp = tmp_path / "h.csv"
    inp.write_text("user_id,item_id,timestamp\n"
                   "a,101,1\n"
                   "a,102,2\n"
                   "b,999,1\n"      # unknown item only -> error entry
                   ",101,3\n"       # line 5: no user
                   "c,101,xx\n"     # line 6: bad timestamp
                   "d,\n"           # line 7: wrong field count
                   "e,,\n"          # empty history marker
                   "a,103,3\n")
    s = score_file(model_dir, inp, tmp_path / "o.csv", k=3, partitions=2, progress=False)
    assert s["malformed_rows"] == 3 and [m["line"] for m in s["malformed"]] == [5, 6, 7]
    assert s["unknown_items"] == 1 and s["errors"] == 2 and s["users"] == 3
    out = pd.read_csv(tmp_path / "o.csv", dtype={"user_id": str})
    assert sorted(out["user_id"].unique()) == ["a", "b", "e"]
    assert out.loc[out.user_id == "b", "error"].item().startswith("no known items")
    assert out.loc[out.user_id == "e", "error"].item() == "empty history"
    recs = out[out.user_id == "a"]
    assert recs["rank"].tolist() == [1, 2, 3] and not set(recs["item_id"]) & {101, 102, 103}


def test_batch_function_is_pandas_in_pandas_out(model_dir):
    scorer = BatchScorer(model_dir, k=4)
    df = pd.DataFrame({"user_id": ["x", "x", "y"], "item_id": [101, 105, 110], "timestamp": [2, 1, 0]})
    out = scorer(df)
    assert list(out.columns) == ["user_id", "rank", "item_id", "score", "error"] and len(out) == 8
    # time order, not row order, defines the history: swapping rows changes nothing
    pd.testing.assert_frame_equal(scorer(df.iloc[[1, 0, 2]]), out)
    assert (out.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()


def test_two_processes_equal_one(tmp_path, model_dir):
    inp = tmp_path / "h.jsonl"
    df = _histories(tmp_path / "h.csv", users=40, seed=1)
    df.to_json(inp, orient="records", lines=True)
    one = score_file(model_dir, inp, tmp_path / "one.parquet", k=5, partitions=4, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "recsys.cli", "score",
           "--model", str(model_dir), "--input", str(inp), "--out", str(tmp_path / "two.parquet"), "--k", "5",
           "--partitions", "4", "--quiet"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet"))
    import json

    two = json.loads((tmp_path / "two.parquet.summary.json").read_text())
    assert two["processes"] == 2 and two["users"] == one["users"] == 40


@pytest.mark.parametrize("semantic", ["continuous", "fsq"])
def test_setrec_scores_through_the_same_cli(tmp_path, semantic):
    from gentok.config import replace
    from recsys.cli import main as cli
    from recsys.models.setrec import SETRec, SETRecConfig

    torch.manual_seed(0)
    m = SETRec(replace(SETRecConfig.tiny(24, 16), semantic=semantic))
    m.set_catalog(torch.nn.functional.normalize(torch.randn(N, 24), dim=-1), torch.randn(N, 16))
    data = RecData(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), [], [str(100 + i) for i in range(N)],
                   [f"item {i}" for i in range(N)], "int")
    save_recommender(m.eval(), tmp_path / "setrec", data)
    inp = tmp_path / "h.csv"
    df = _histories(inp, users=20)
    cli(["score", "--model", str(tmp_path / "setrec"), "--input", str(inp), "--out", str(tmp_path / "o.parquet"),
         "--k", "5", "--quiet"])
    out = pd.read_parquet(tmp_path / "o.parquet")
    assert out["user_id"].nunique() == 20 and (out.groupby("user_id").size() == 5).all()
    assert out["item_id"].astype(int).between(100, 100 + N - 1).all()
    for user, recs in out.groupby("user_id"):  # seen items are excluded, as for every recommender
        assert not set(recs["item_id"].astype(int)) & set(df.loc[df.user_id == user, "item_id"])
    # the same ranking as the model itself
    hist = sorted(df[df.user_id == "user0"].itertuples(), key=lambda r: r.timestamp)
    items, _ = m.recommend([[r.item_id - 100 for r in hist]], k=5)
    assert (out[out.user_id == "user0"].sort_values("rank")["item_id"].astype(int) - 100).tolist() == items[0].tolist()


# -- ids keep their type: the recommendations join back to the input ----------------------------------------------
def _write(df: pd.DataFrame, path):
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_json(path, orient="records", lines=True)


def _read(path):
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


USER_IDS = {"int": lambda u: 7000 + 3 * u, "str": lambda u: f"user{u}"}


@pytest.mark.parametrize("users", ["int", "str"])
@pytest.mark.parametrize("fmt_in", [".csv", ".parquet", ".jsonl"])
@pytest.mark.parametrize("fmt_out", [".csv", ".parquet"])
def test_ids_keep_their_type_and_join_back(tmp_path, model_dir, users, fmt_in, fmt_out):
    hist = _histories(tmp_path / "h.csv", users=15, seed=3)
    user_of = {f"user{u}": USER_IDS[users](u) for u in range(15)}
    inp = hist.assign(user_id=hist["user_id"].map(user_of))
    _write(inp, tmp_path / f"in{fmt_in}")
    summary = score_file(model_dir, tmp_path / f"in{fmt_in}", tmp_path / f"out{fmt_out}", k=3, partitions=3,
                         progress=False)
    assert summary["user_id_type"] == users and summary["item_id_type"] == "int"
    out = _read(tmp_path / f"out{fmt_out}")
    if users == "int":
        assert pd.api.types.is_integer_dtype(out["user_id"])
    else:
        assert pd.api.types.is_string_dtype(out["user_id"])
    assert pd.api.types.is_integer_dtype(out["item_id"])
    # the user's own reading of the input joins with the output on every user, each with its k recommendations
    back = _read(tmp_path / f"in{fmt_in}") if fmt_in != ".jsonl" else pd.read_json(tmp_path / f"in{fmt_in}", lines=True)
    joined = back.drop_duplicates("user_id").merge(out, on="user_id", suffixes=("_in", ""))
    assert len(joined) == len(out) == 15 * 3
    # and the type changes nothing else: same recommendations as the reference run with string user ids
    ref = score_file(model_dir, tmp_path / "h.csv", tmp_path / "ref.parquet", k=3, partitions=2, progress=False)
    assert ref["users"] == 15
    ref_out = pd.read_parquet(tmp_path / "ref.parquet")
    ref_out["user_id"] = ref_out["user_id"].map(user_of)
    key = ["user_id", "rank"]
    mine = out.sort_values(key, kind="stable").reset_index(drop=True)
    theirs = ref_out.sort_values(key, kind="stable").reset_index(drop=True)
    assert mine["user_id"].tolist() == theirs["user_id"].tolist()
    assert mine["item_id"].tolist() == theirs["item_id"].tolist()
    np.testing.assert_allclose(mine["score"].to_numpy(float), theirs["score"].to_numpy(float), rtol=1e-5)


def test_text_ids_that_are_not_canonical_integers_stay_strings(tmp_path, model_dir):
    # "007" would lose its zeros as an integer; a Parquet string column holds strings even when they look numeric
    (tmp_path / "a.csv").write_text("user_id,item_id\n007,101\n007,102\n42,103\n")
    score_file(model_dir, tmp_path / "a.csv", tmp_path / "a.parquet", k=2, partitions=1, progress=False)
    assert sorted(pd.read_parquet(tmp_path / "a.parquet")["user_id"].unique()) == ["007", "42"]
    pd.DataFrame({"user_id": ["5", "5", "6"], "item_id": [101, 102, 103]}).to_parquet(tmp_path / "b.parquet")
    score_file(model_dir, tmp_path / "b.parquet", tmp_path / "o.parquet", k=2, partitions=1, progress=False)
    out = pd.read_parquet(tmp_path / "o.parquet")
    assert pd.api.types.is_string_dtype(out["user_id"]) and sorted(out["user_id"].unique()) == ["5", "6"]


@pytest.mark.parametrize("users", [[3, 3, 9], ["a", "a", "b"], pd.array([3, 3, 9], dtype="Int64")])
def test_batch_scorer_returns_user_ids_in_the_callers_dtype(model_dir, users):
    scorer = BatchScorer(model_dir, k=2)
    df = pd.DataFrame({"user_id": users, "item_id": [101, 105, 110.0], "timestamp": [2, 1, 0]})
    out = scorer(df)
    assert out["user_id"].dtype == df["user_id"].dtype and out["item_id"].dtype == "Int64"
    assert len(df.merge(out, on="user_id")) == 2 * 2 + 2  # user 3 has two rows, each joins its 2 recommendations
    assert out.loc[out["user_id"] == df["user_id"][2], "error"].isna().all()  # 110.0 is item 110, known
    with pytest.raises(ValueError, match="user_id is missing"):
        scorer(pd.DataFrame({"user_id": [1.0, None], "item_id": [101, 102]}))
