"""Recommender recipes and model directories: data that lacks what a model needs ends with one line (no traceback),
id-only data trains SASRec end to end (train -> score -> join back), and recommenders load through gentok's one
registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gentok import checkpoint
from recsys.data import DataError, RecData, from_frames, leave_one_out
from recsys.models.base import Recommender
from recsys.saving import load_recommender, save_recommender

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _run(cmd, cwd=ROOT):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=420, env=ENV)


@pytest.fixture(scope="module")
def id_only(tmp_path_factory) -> Path:
    """interactions.parquet with integer user_id, item_id, timestamp and nothing else (no item text)."""
    rng = np.random.default_rng(0)
    rows = [(1000 + u, 7 * int(rng.integers(0, 20)), t) for u in range(30) for t in range(8)]
    path = tmp_path_factory.mktemp("data") / "interactions.parquet"
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("recipe", ["recgpt", "setrec"])
def test_text_recipes_refuse_id_only_data_in_one_line(tmp_path, id_only, recipe):
    r = _run([sys.executable, f"recipes/{recipe}.py", "--data", str(id_only), "--output-dir", str(tmp_path / "o")])
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"{recipe}: error: the data has no item text") and "SASRec" in lines[0]
    assert not (tmp_path / "o" / "model").exists()


def test_id_only_data_trains_sasrec_and_recommendations_join_back(tmp_path, id_only):
    out = tmp_path / "sasrec"
    r = _run([sys.executable, "recipes/sasrec.py", "--data", str(id_only), "--output-dir", str(out), "--preset",
              "tiny", "--max-steps", "4", "--set", "train.batch_size=8", "--set", "train.eval_every=2"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"]["test_cases"] == 30 and 0 <= metrics["test"]["recall@10"]["mean"] <= 1
    model, item_ids, kind = load_recommender(out / "model")
    assert kind == "int" and sorted(map(int, item_ids)) == sorted(set(pd.read_parquet(id_only)["item_id"]))
    from recsys.cli import main as cli

    assert cli(["score", "--model", str(out / "model"), "--input", str(id_only), "--out", str(tmp_path / "r.parquet"),
                "--k", "3", "--quiet"]) == 0
    recs = pd.read_parquet(tmp_path / "r.parquet")
    assert recs["user_id"].dtype == "int64" and pd.api.types.is_integer_dtype(recs["item_id"])
    inter = pd.read_parquet(id_only)
    joined = inter.drop_duplicates("user_id").merge(recs, on="user_id")
    assert len(joined) == len(recs) == 30 * 3


def test_sasrec_recipe_serves_the_co_occurrence_expert_on_request_and_it_scores(tmp_path, id_only):
    out = tmp_path / "sasrec"
    r = _run([sys.executable, "recipes/sasrec.py", "--data", str(id_only), "--output-dir", str(out), "--preset",
              "tiny", "--max-steps", "4", "--set", "train.batch_size=8", "--set", "train.eval_every=2",
              "--cooccurrence"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "co-occurrence expert: window" in r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    share = metrics["cooccurrence"]["share"]
    assert 0 <= share <= 1 and set(metrics["without_cooccurrence"]) == {"valid", "test"}
    model, _, _ = load_recommender(out / "model")
    from recsys.models.with_cooccurrence import WithCooccurrence

    assert type(model) is WithCooccurrence and model.config.share == share and model.config.pairs > 0
    from recsys.cli import main as cli

    assert cli(["score", "--model", str(out / "model"), "--input", str(id_only), "--out", str(tmp_path / "r.parquet"),
                "--k", "3", "--quiet"]) == 0
    assert len(pd.read_parquet(tmp_path / "r.parquet")) == 30 * 3


def test_user_mistakes_end_in_one_line_and_status_2_bugs_keep_their_traceback(capsys, monkeypatch):
    from recsys.cli.errors import call, run

    def bad(argv):
        raise DataError("the data has no item text")

    with pytest.raises(SystemExit) as e:
        run(bad, [], "demo")
    assert e.value.code == 2 and capsys.readouterr().err == "demo: error: the data has no item text\n"
    assert call(lambda argv: open("/no/such/file"), [], "demo") == 2
    assert capsys.readouterr().err == "demo: error: /no/such/file: no such file or directory\n"

    def bug(argv):  # anything else is a bug and keeps its traceback
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        call(bug, [], "demo")
    # --debug (taken out of the arguments) or GENTOK_DEBUG=1 shows the traceback of a user mistake too
    seen = []
    assert call(lambda argv: seen.append(argv) or bad(argv), ["--debug", "x"], "demo") == 2
    err = capsys.readouterr().err
    assert seen == [["x"]] and "Traceback" in err and err.endswith("demo: error: the data has no item text\n")
    monkeypatch.setenv("GENTOK_DEBUG", "1")
    assert call(bad, [], "demo") == 2 and "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("GENTOK_DEBUG", "0")
    assert call(bad, [], "demo") == 2 and "Traceback" not in capsys.readouterr().err


def test_too_little_data_for_one_batch_is_a_data_error():
    from gentok.training import TrainConfig
    from recsys.models.sasrec import SASRec, SASRecConfig
    from recsys.train import train_recommender

    data = from_frames(pd.DataFrame({"user_id": [1] * 4 + [2] * 4, "item_id": [1, 2, 3, 4, 2, 3, 4, 5]}))
    with pytest.raises(DataError, match="fewer than one batch of 32"):
        train_recommender(SASRec(SASRecConfig.tiny(num_items=data.num_items)), leave_one_out(data),
                          TrainConfig(batch_size=32, max_steps=1), max_len=8)
    with pytest.raises(DataError, match="nothing to learn"):
        train_recommender(SASRec(SASRecConfig.tiny(num_items=2)), leave_one_out(from_frames(
            pd.DataFrame({"user_id": [1, 2], "item_id": [1, 2]}))), TrainConfig(batch_size=1, max_steps=1), max_len=8)


def test_every_recsys_type_is_registered_and_recommenders_are_recommenders(monkeypatch):
    from checkout_entry_points import use_checkout_entry_points

    use_checkout_entry_points(monkeypatch)  # the types this checkout declares (tests/checkout_entry_points.py)
    types = [t for t in checkpoint.declared_types() if t.startswith("recsys.")]
    tokenizers = ["recsys.item_tokens", "recsys.semantic_ids"]
    assert sorted(types) == ["recsys.item_tokens", "recsys.recgpt", "recsys.recgpt_sasrec", "recsys.sasrec",
                             "recsys.semantic_ids", "recsys.setrec", "recsys.setrec_sasrec", "recsys.with_cooccurrence"]
    for t in types:
        assert issubclass(checkpoint.model_class(t), Recommender) == (t not in tokenizers), t


def test_load_recommender_uses_the_one_registry_lazily(tmp_path):
    from recsys.item_tokens import ItemTokenizer, ItemTokenizerConfig
    from recsys.models.sasrec import SASRec, SASRecConfig

    torch.manual_seed(0)
    data = RecData(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), [], ["a", "b", "c"], [""] * 3, "str")
    sas = SASRec(SASRecConfig.tiny(num_items=3)).eval()
    save_recommender(sas, tmp_path / "sas", data)
    model, ids, kind = load_recommender(tmp_path / "sas")
    assert ids == ["a", "b", "c"] and kind == "str"
    torch.testing.assert_close(model.score_all([[0, 1]]), sas.score_all([[0, 1]]))
    # another gentok model is refused by type, before anything else is read
    ItemTokenizer(ItemTokenizerConfig.tiny(24)).save_pretrained(tmp_path / "tok")
    with pytest.raises(checkpoint.CheckpointError, match="not a recommender"):
        load_recommender(tmp_path / "tok")
    (tmp_path / "sas" / "items.json").unlink()
    with pytest.raises(checkpoint.CheckpointError, match="no items.json"):
        load_recommender(tmp_path / "sas")
    # a fresh process imports only the module of the checkpoint's type
    save_recommender(sas, tmp_path / "sas2", data)
    code = ("import sys; from recsys.saving import load_recommender; load_recommender(sys.argv[1]); "
            "print(sorted(m for m in ('recsys.models.recgpt', 'recsys.models.setrec', 'recsys.item_tokens') "
            "if m in sys.modules))")
    r = _run([sys.executable, "-c", code, str(tmp_path / "sas2")])
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr[-2000:]


def test_item_tokenizer_is_trained_once_then_reloaded(tmp_path):
    from gentok.config import replace
    from recsys.item_tokens import ItemTokenizerConfig
    from recsys.train import train_item_tokenizer

    emb = torch.nn.functional.normalize(torch.randn(40, 24, generator=torch.Generator().manual_seed(0)), dim=-1)
    cfg = replace(ItemTokenizerConfig.tiny(24), max_suffix=64)  # 3 steps leave many collisions: the suffix absorbs them
    tok = train_item_tokenizer(emb, cfg, tmp_path, steps=3, batch_size=16, progress=False)
    assert (tmp_path / "model" / checkpoint.CONFIG_NAME).is_file() and tok.num_items == 40
    again = train_item_tokenizer(emb, cfg, tmp_path, steps=3, progress=False)
    assert torch.equal(again.codes, tok.codes)
    assert len({tuple(c) for c in tok.codes.tolist()}) == 40  # the frozen table gives every item its own codes
