"""The `recsys` command line as a new user meets it (issue 32's recsys rows): score input named like the training
data, `--catalog` with an id-based model, and user mistakes as one line with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.cli import main as cli
from recsys.data import RecData
from recsys.models.sasrec import SASRec, SASRecConfig
from recsys.saving import save_recommender

ROOT = Path(__file__).resolve().parents[1]
N = 40


@pytest.fixture(scope="module")
def sasrec_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("cli") / "sasrec"
    data = RecData(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), [], [str(500 + i) for i in range(N)],
                   [""] * N, "int")
    save_recommender(SASRec(SASRecConfig.tiny(num_items=N)).eval(), d, data)
    return d


def _histories(users: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(100 + u, 500 + int(rng.integers(0, N)), int(rng.integers(0, 10_000)))
            for u in range(users) for _ in range(int(rng.integers(1, 6)))]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def _score(model_dir, inp: Path, out: Path, *extra) -> int:
    return cli(["score", "--model", str(model_dir), "--input", str(inp), "--out", str(out), "--k", "4", "--quiet",
                "--partitions", "2", *extra])


@pytest.mark.parametrize("names", [("userId", "movieId", "timestamp"), ("userid", "movie_id", "Time"),
                                   ("USER", "item", "ts")])
@pytest.mark.parametrize("fmt", [".csv", ".parquet", ".jsonl"])
def test_score_accepts_the_column_names_training_accepts(tmp_path, sasrec_dir, names, fmt):
    hist = _histories()
    _score(sasrec_dir, _write(hist, tmp_path / f"ref{fmt}"), tmp_path / "ref.parquet")
    renamed = hist.rename(columns=dict(zip(["user_id", "item_id", "timestamp"], names)))
    assert _score(sasrec_dir, _write(renamed, tmp_path / f"in{fmt}"), tmp_path / "out.parquet") == 0
    # the same users, recommendations and scores as with the canonical names (the time column is read too: a
    # file without one would order histories by row)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out.parquet"), pd.read_parquet(tmp_path / "ref.parquet"))
    # and the same names work for the pandas batch function and for training / evaluation data
    from recsys.data import from_frames
    from recsys.scoring import BatchScorer

    scorer = BatchScorer(sasrec_dir, k=4)
    pd.testing.assert_frame_equal(scorer(renamed).rename(columns={"user_id": "u"}),
                                  scorer(hist).rename(columns={"user_id": "u"}))
    assert from_frames(renamed).summary() == from_frames(hist).summary()


def _write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_json(path, orient="records", lines=True)
    return path


def test_score_without_a_user_column_names_the_accepted_names(tmp_path, sasrec_dir, capsys):
    (tmp_path / "h.csv").write_text("customer,movieId\n1,501\n")
    assert _score(sasrec_dir, tmp_path / "h.csv", tmp_path / "o.parquet") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("recsys score: error: ") and "no user id column" in err[0]
    assert "userid" in err[0] and "'customer'" in err[0]


def test_catalog_with_sasrec_counts_outside_items_apart_from_unknown_ones(tmp_path, sasrec_dir):
    # the catalog: 10 of the model's 40 items (SASRec ranks a subset of its own catalog)
    inside = [500 + i for i in range(0, 40, 4)]
    pd.DataFrame({"item_id": inside}).to_csv(tmp_path / "items.csv", index=False)
    rows = ([("a", 500 + i, t) for t, i in enumerate([1, 2, 3, 5, 6, 7, 9, 10, 11, 13] * 2)]  # all outside it
            + [("b", 501, 1), ("b", 504, 2), ("b", 502, 3)]  # one inside, two outside
            + [("c", 999, 1), ("c", 998, 2)])  # unknown to the model
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(tmp_path / "h.csv", index=False)
    assert _score(sasrec_dir, tmp_path / "h.csv", tmp_path / "o.parquet", "--catalog", str(tmp_path / "items.csv")) == 0
    out = pd.read_parquet(tmp_path / "o.parquet")
    errors = out.set_index("user_id")["error"].dropna().to_dict()
    assert errors == {"a": "no items in the catalog (20 outside it, 0 unknown to the model)",
                      "c": "no known items (2 unknown to the model)"}
    recs = out[out.user_id == "b"]
    assert len(recs) == 4 and set(recs["item_id"]) <= set(inside) - {504}
    summary = json.loads((tmp_path / "o.parquet.summary.json").read_text())
    assert summary["outside_catalog_items"] == 22 and summary["unknown_items"] == 2 and summary["errors"] == 2
    # b's recommendations are the model's own ranking of the catalog, from b's one catalog item
    from recsys.saving import load_recommender

    model, ids, _ = load_recommender(sasrec_dir)
    scores = model.score_all([[ids.index("504")]])[0]
    rows_in = [ids.index(str(i)) for i in inside if i != 504]
    best = [int(ids[r]) for r in sorted(rows_in, key=lambda r: -float(scores[r]))[:4]]
    assert recs.sort_values("rank")["item_id"].tolist() == best


@pytest.mark.parametrize("argv, says", [
    (["score", "--model", "{tmp}/none", "--input", "{tmp}/h.csv", "--out", "{tmp}/o.parquet"], "none"),
    (["score", "--model", "{model}", "--input", "{tmp}/missing.csv", "--out", "{tmp}/o.parquet"], "missing.csv"),
    (["score", "--model", "{model}", "--input", "{tmp}", "--out", "{tmp}/o.parquet"], "is a directory: give one file"),
    (["score", "--model", "{model}", "--input", "{tmp}/h.csv", "--out", "{tmp}/o.txt"], ".parquet or .csv"),
    (["score", "--model", "{model}", "--input", "{tmp}/h.csv", "--out", "{tmp}/o.parquet", "--k", "0"], "k must"),
    (["evaluate", "--model", "{tmp}", "--data", "{tmp}/h.csv"], "config.json"),
    (["evaluate", "--model", "{model}", "--data", "{tmp}/nothing.csv"], "does not exist"),
])
def test_user_mistakes_are_one_line_and_status_2(tmp_path, sasrec_dir, capsys, argv, says):
    _histories().to_csv(tmp_path / "h.csv", index=False)
    argv = [a.format(tmp=tmp_path, model=sasrec_dir) for a in argv] + (["--quiet"] if argv[0] == "score" else [])
    assert cli(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"recsys {argv[0]}: error: ") and says in lines[0], err
    assert cli(argv + ["--debug"]) == 2 and "Traceback" in capsys.readouterr().err


def test_the_command_prints_no_traceback(tmp_path, sasrec_dir):
    """The installed entry point's path: a fresh process, stderr as the user sees it."""
    r = subprocess.run([sys.executable, "-m", "recsys.cli", "score", "--model", str(sasrec_dir), "--input",
                        str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o.parquet")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"recsys score: error: input {tmp_path / 'missing.csv'} does not exist"]
