"""Ray Data and Spark jobs (gentok/engines, recsys/engines.py): the same rows as the local paths, and a worker that
fails or dies mid-run loses and duplicates nothing.

One local Ray (2 CPUs) and one Spark `local[2,4]` session serve the whole module and are stopped at its end; each
engine runs only a few small jobs (worker start-up, which imports torch, dominates their time). Every engine run here
also injects a fault (GENTOK_FAIL_ONCE): one task raises or its worker process exits after writing its output, and
the engine's retry must leave exactly the rows of an uninterrupted local run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gentok.cli import main as gentok_cli
from gentok.engines import InjectedFault, encode_to_parquet, expand_inputs, read_encoded
from gentok.engines.common import FAIL_MODE_ENV, FAIL_ONCE_ENV, content_key, fault_plan, maybe_fail, runner
from gentok.tokenizers.tokens import Tokens
from recsys.cli import main as recsys_cli
from recsys.engines import read_scores, score_on_engine
from recsys.scoring import score_file

sys.path.insert(0, str(Path(__file__).parent))
from test_tokenizer_contract import _audio_files, _codec, _titok  # noqa: E402  (the contract's tiny models)

N = 50  # catalog size of the tiny recommender
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


# -- sessions and models, one per module ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    from gentok.engines import ray_runner

    ray_runner.session(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def spark_session():
    pytest.importorskip("pyspark")
    from gentok.engines import spark_runner

    spark = spark_runner.session("local[2,4]")
    yield spark
    spark.stop()


@pytest.fixture(scope="module")
def rec_model(tmp_path_factory):
    from recsys.data import RecData
    from recsys.models.sasrec import SASRec, SASRecConfig
    from recsys.saving import save_recommender

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("rec") / "m"
    data = RecData(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), [], [str(100 + i) for i in range(N)],
                   [""] * N, "int")
    save_recommender(SASRec(SASRecConfig.tiny(num_items=N)).eval(), d, data)
    return d


def _histories(users: int, seed: int, int_users: bool) -> pd.DataFrame:
    """Shuffled long-form histories with unknown items (>= 100 + N), timestamp ties and one empty-history user."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        uid = u * 7 if int_users else f"user{u}"
        for _ in range(int(rng.integers(1, 6))):
            rows.append((uid, 100 + int(rng.integers(0, N + 3)), int(rng.integers(0, 20))))
    rows.append((-3 if int_users else "nobody", None, None))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).sample(frac=1.0, random_state=seed)


def _local(model, inp, tmp_path) -> tuple[pd.DataFrame, dict]:
    summary = score_file(model, inp, tmp_path / "local.parquet", k=5, partitions=3, progress=False)
    return read_scores(tmp_path / "local.parquet"), summary


def _same_summary(a: dict, b: dict):
    keys = ["users", "rows", "unknown_items", "users_with_unknown", "errors", "malformed_rows", "malformed",
            "user_id_type", "item_id_type"]
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}


@pytest.fixture
def fail_once(tmp_path, monkeypatch):
    """Arm one injected fault; returns a function telling whether it fired (its marker exists)."""
    marker = tmp_path / "faults"

    def arm(mode: str):
        monkeypatch.setenv(FAIL_ONCE_ENV, str(marker))
        monkeypatch.setenv(FAIL_MODE_ENV, mode)
        return lambda: marker.is_dir() and any(marker.iterdir())

    return arm


# -- engine-agnostic pieces (no engine) -------------------------------------------------------------------------------
def test_fault_fires_once_and_only_when_armed(tmp_path, monkeypatch):
    monkeypatch.delenv(FAIL_ONCE_ENV, raising=False)
    assert fault_plan() is None
    maybe_fail(None, "x")  # unarmed: nothing happens
    monkeypatch.setenv(FAIL_ONCE_ENV, str(tmp_path / "m"))
    plan = fault_plan()
    with pytest.raises(InjectedFault):
        maybe_fail(plan, "x")
    maybe_fail(plan, "x")  # the retry passes
    with pytest.raises(InjectedFault):
        maybe_fail(plan, "y")  # another site fails once too
    monkeypatch.setenv(FAIL_MODE_ENV, "crash")
    with pytest.raises(ValueError, match="raise' or 'exit"):
        fault_plan()
    with pytest.raises(ValueError, match="engine must be one of"):
        runner("dask")
    assert content_key("a", [1, 2]) == content_key("a", [1, 2]) != content_key("a", [2, 1])


def test_local_engine_scoring_equals_score_file_for_any_partitions(tmp_path, rec_model):
    inp = tmp_path / "h.csv"
    _histories(60, 0, int_users=True).to_csv(inp, index=False)
    ref, ref_summary = _local(rec_model, inp, tmp_path)
    s = score_on_engine(rec_model, inp, tmp_path / "eng", engine="local", k=5, partitions=5, progress=False)
    pd.testing.assert_frame_equal(read_scores(tmp_path / "eng"), ref)
    _same_summary(s, ref_summary)
    assert ref["user_id"].dtype == np.int64 and str(ref["item_id"].dtype) == "Int64"
    # a finished run is not redone; a foreign directory is not overwritten
    assert score_on_engine(rec_model, inp, tmp_path / "eng", engine="local", k=5, partitions=5,
                           progress=False) == s
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        score_on_engine(rec_model, inp, tmp_path / "foreign", engine="local", progress=False)


def test_local_engine_encode_skips_written_batches_and_drops_stale_parts(tmp_path):
    model = tmp_path / "titok"
    torch.manual_seed(0)
    _titok().eval().save_pretrained(model)
    files = _image_set(tmp_path / "imgs", 5)
    first = encode_to_parquet(model, [tmp_path / "imgs"], tmp_path / "out", engine="local", batch_size=2)
    assert (first["partitions"], first["encoded"], first["skipped"]) == (3, 3, 0)
    again = encode_to_parquet(model, files, tmp_path / "out", engine="local", batch_size=2)
    assert (again["encoded"], again["skipped"]) == (0, 3)
    # a changed file re-encodes its batch only, and the old batch's file goes away
    os.utime(files[4], ns=(1, 1))
    third = encode_to_parquet(model, files, tmp_path / "out", engine="local", batch_size=2)
    assert (third["encoded"], third["skipped"]) == (1, 2)
    assert len(list((tmp_path / "out").glob("part-*.parquet"))) == 3
    with pytest.raises(ValueError, match="not found"):
        expand_inputs([tmp_path / "missing"])


# -- assets ------------------------------------------------------------------------------------------------------------
def _image_set(folder: Path, n: int) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    paths = []
    for i in range(n):
        p = folder / f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def _local_tokens(model: Path, files: list[str], tmp: Path, batch_size: int) -> Tokens:
    out = tmp / "local.safetensors"
    assert gentok_cli(["encode", "--model", str(model), *files, "--out", str(out),
                       "--batch-size", str(batch_size)]) == 0
    return Tokens.load(out)


def _check_rows(out_dir: Path, ref: Tokens, files: list[str]):
    """Engine rows == the local token file: same ids, lengths and order, one row per file."""
    got, sources = read_encoded(out_dir)
    assert sources == files
    assert torch.equal(got.lengths, ref.lengths)
    for i in range(len(ref)):
        assert torch.equal(got.item(i), ref.item(i)), f"item {i} ({files[i]}) differs"
    df = pd.read_parquet(out_dir)
    assert len(df) == len(files) and sorted(df["index"]) == list(range(len(files)))  # no duplicates


# -- Ray --------------------------------------------------------------------------------------------------------------
def test_ray_scoring_equals_local_after_a_worker_dies(tmp_path, rec_model, ray_session, fail_once):
    inp = tmp_path / "h.csv"
    _histories(80, 1, int_users=True).to_csv(inp, index=False)
    ref, ref_summary = _local(rec_model, inp, tmp_path)
    fired = fail_once("exit")  # one actor process exits after writing its part: Ray restarts it and retries
    assert recsys_cli(["score", "--engine", "ray", "--model", str(rec_model), "--input", str(inp), "--out",
                       str(tmp_path / "ray"), "--k", "5", "--partitions", "4", "--quiet"]) == 0
    assert fired()
    pd.testing.assert_frame_equal(read_scores(tmp_path / "ray"), ref)
    _same_summary(json.loads((tmp_path / "ray" / "_summary.json").read_text()), ref_summary)


def test_ray_encode_images_equals_local(tmp_path, ray_session, capfd):
    model = tmp_path / "titok"
    torch.manual_seed(0)
    _titok().eval().save_pretrained(model)
    files = _image_set(tmp_path / "imgs", 5)
    ref = _local_tokens(model, files, tmp_path, batch_size=2)
    capfd.readouterr()
    assert gentok_cli(["encode", "--engine", "ray", "--model", str(model), str(tmp_path / "imgs"), "--out",
                       str(tmp_path / "ray"), "--batch-size", "2"]) == 0
    # a successful run prints its summary and nothing of Ray's (no notices, no error-level lines)
    out = capfd.readouterr()
    assert out.err == "" and out.out.startswith("encoded 5 file(s) on ray"), out
    _check_rows(tmp_path / "ray", ref, files)


def test_ray_encode_audio_equals_local_after_a_task_fails(tmp_path, ray_session, fail_once):
    model = tmp_path / "codec"
    torch.manual_seed(0)
    _codec().eval().save_pretrained(model)
    (tmp_path / "wavs").mkdir()
    files = [str(p) for p in _audio_files(tmp_path / "wavs")]
    ref = _local_tokens(model, files, tmp_path, batch_size=2)
    assert ref.num_codebooks > 1 and len(set(ref.lengths.tolist())) > 1  # multi-codebook, ragged
    fired = fail_once("raise")
    s = encode_to_parquet(model, [tmp_path / "wavs"], tmp_path / "ray", engine="ray", batch_size=2)
    assert fired() and s["encoded"] == 2
    _check_rows(tmp_path / "ray", ref, files)
    rerun = encode_to_parquet(model, [tmp_path / "wavs"], tmp_path / "ray", engine="ray", batch_size=2)
    assert (rerun["encoded"], rerun["skipped"]) == (0, 2)


# -- Spark ------------------------------------------------------------------------------------------------------------
def test_spark_scoring_equals_local_after_a_task_fails(tmp_path, rec_model, spark_session, fail_once):
    inp = tmp_path / "h.jsonl"
    df = _histories(80, 2, int_users=False)
    text = df.to_json(orient="records", lines=True) + "not json\n"  # a malformed line, reported alike
    inp.write_text(text)
    ref, ref_summary = _local(rec_model, inp, tmp_path)
    fired = fail_once("raise")
    assert recsys_cli(["score", "--engine", "spark", "--model", str(rec_model), "--input", str(inp), "--out",
                       str(tmp_path / "spark"), "--k", "5", "--quiet"]) == 0
    assert fired()
    got = read_scores(tmp_path / "spark")
    pd.testing.assert_frame_equal(got, ref)
    assert ref_summary["malformed_rows"] == 1 and got["user_id"].map(type).eq(str).all()
    _same_summary(json.loads((tmp_path / "spark" / "_summary.json").read_text()), ref_summary)


def test_spark_encode_images_equals_local_after_a_worker_dies(tmp_path, spark_session, fail_once):
    model = tmp_path / "titok"
    torch.manual_seed(0)
    _titok().eval().save_pretrained(model)
    files = _image_set(tmp_path / "imgs", 5)
    ref = _local_tokens(model, files, tmp_path, batch_size=2)
    fired = fail_once("exit")  # the Python worker exits after writing: Spark reruns the task
    s = encode_to_parquet(model, files, tmp_path / "spark", engine="spark", batch_size=2)
    assert fired() and s["encoded"] == 3
    _check_rows(tmp_path / "spark", ref, files)
