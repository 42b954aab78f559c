"""Item identity across catalogs (`recsys.catalog`): data whose ids number other items fails with a clear error,
and a text-based model recommends on a catalog it never trained on (zero-shot), end to end through the recipes and
the `recsys` CLI with tiny models and a tiny local text encoder."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.catalog import Catalog, CatalogMismatch, CatalogWarning, remap_to_catalog, text_fingerprint, with_catalog
from recsys.data import DataError, RecData, load_items
from recsys.saving import load_catalog, load_recommender, open_recommender, save_recommender

ROOT = Path(__file__).resolve().parents[1]
E = 24
WORDS = ["red", "blue", "green", "space", "war", "love", "story", "night", "city", "river", "ghost", "king", "dog",
         "robot", "music", "winter", "summer", "island", "secret", "dream"]


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # text embeddings of this module are cached apart
        mp.setenv("GENTOK_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> str:
    """A tiny random BERT (24-d) saved as a local transformers model: a text encoder that loads in milliseconds."""
    from transformers import BertConfig, BertModel, BertTokenizer

    d = tmp_path_factory.mktemp("encoder")
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "(", ")", ":"] + chars + [f"##{c}" for c in chars]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=E, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=2 * E, max_position_embeddings=80)).save_pretrained(d)
    BertTokenizer(str(d / "vocab.txt")).save_pretrained(d)
    return str(d)


def _title(rng, prefix: str) -> str:
    return f"{prefix} " + " ".join(rng.choice(WORDS, 3, replace=False))


def _write(path: Path, ids, texts, users: int, seed: int) -> Path:
    """A data directory: items.csv (item_id, title) and interactions.csv (user_id, item_id, timestamp)."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True)
    pd.DataFrame({"item_id": ids, "title": texts}).to_csv(path / "items.csv", index=False)
    rows = [(u, int(rng.choice(ids)), t) for u in range(users) for t in range(int(rng.integers(4, 9)))]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(path / "interactions.csv", index=False)
    return path


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory) -> tuple[Path, Path]:
    """A: 30 movies with ids 1..30. B, another catalog: ids 1..4 are A's items 1..4 (same text), ids 5..20 number
    other items (books), ids 100..109 are new."""
    root = tmp_path_factory.mktemp("catalogs")
    rng = np.random.default_rng(0)
    a_text = [_title(rng, f"movie {i}") for i in range(1, 31)]
    a = _write(root / "a", list(range(1, 31)), a_text, users=40, seed=1)
    b_ids = list(range(1, 21)) + list(range(100, 110))
    b_text = a_text[:4] + [_title(rng, f"book {i}") for i in b_ids[4:]]
    b = _write(root / "b", b_ids, b_text, users=30, seed=2)
    return a, b


def _recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", ROOT / "recipes" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TINY = ["--preset", "tiny", "--max-steps", "4", "--set", "train.batch_size=8", "--set", "train.eval_every=2",
        "--set", "train.checkpoint_every=0", "--set", "train.progress=false", "--seed", "0"]


@pytest.fixture(scope="module")
def recgpt_dir(catalogs, encoder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("recgpt")
    # max_suffix 128 > every catalog here, so a barely trained tokenizer's collisions always fit
    _recipe("recgpt").main(["--data", str(catalogs[0]), "--output-dir", str(out), "--text-encoder", encoder,
                            "--tokenizer-steps", "5", "--set", "model.tokenizer.max_suffix=128", *TINY])
    return out / "model"


@pytest.fixture(scope="module")
def setrec_dir(catalogs, encoder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("setrec")
    _recipe("setrec").main(["--data", str(catalogs[0]), "--output-dir", str(out), "--text-encoder", encoder,
                            "--sasrec-steps", "2", *TINY])
    return out / "model"


# -- identity -------------------------------------------------------------------------------------------------------
def test_matching_by_identity_names_the_mismatching_items():
    cat = Catalog.of(["1", "2", "3"], ["Heat (1995)", "Up", ""], "int")
    idx = cat.match(["3", "1", "9"], ["", "  Heat   (1995) ", "Jaws"])  # whitespace does not change the text
    assert idx.tolist() == [2, 0, -1]
    with pytest.raises(CatalogMismatch, match=r"1 of the 2 items of the data .* other items.*id '2' is 'Emma'"):
        cat.match(["1", "2"], ["Heat (1995)", "Emma"])
    with pytest.warns(CatalogWarning, match="1 items of the data have no text"):
        assert cat.match(["1"], [""]).tolist() == [0]  # nothing to check it against: by id, with a warning
    old = Catalog(["1", "2"], None, "int")  # a model directory written before fingerprints existed
    with pytest.warns(CatalogWarning, match="no item text fingerprints"):
        assert old.match(["2", "1"], ["Emma", "x"]).tolist() == [1, 0]
    assert text_fingerprint("") == "" and text_fingerprint("a  b") == text_fingerprint(" a b")


def test_remap_keeps_known_items_drops_unknown_and_refuses_foreign_data():
    data = RecData(np.array([0, 0, 1, 1]), np.array([0, 1, 2, 0]), np.arange(4), ["u", "v"], ["7", "8", "9"],
                   ["A", "B", "C"], "int")
    cat = Catalog.of(["9", "7"], ["C", "A"], "int")
    out, dropped = remap_to_catalog(data, cat)
    assert dropped == 1 and out.items.tolist() == [1, 0, 1] and out.item_ids == ["9", "7"]
    with pytest.raises(DataError, match="none of the 3 items"):
        remap_to_catalog(data, Catalog.of(["1"], ["Z"], "int"))


def test_load_items_reads_items_tables_and_refuses_duplicates(tmp_path, catalogs):
    items = load_items(catalogs[1] / "items.csv")
    assert items.id_kind == "int" and len(items.item_ids) == 30 and items.item_text[0].startswith("movie 1 ")
    assert load_items(catalogs[1]).item_ids == items.item_ids  # the directory: its items file
    full = load_items(catalogs[1] / "interactions.csv")  # interactions without text columns: ids, no text
    assert set(full.item_ids) <= set(items.item_ids) and not any(full.item_text)
    (tmp_path / "dup.csv").write_text("item_id,title\n1,a\n1,b\n")
    with pytest.raises(DataError, match="'1' is listed more than once"):
        load_items(tmp_path / "dup.csv")


# -- with_catalog on in-memory models -------------------------------------------------------------------------------
def _tiny_recgpt(n=20):
    """The same untrained tiny RecGPT on every call (fixed seed) over n random item embeddings."""
    from gentok.config import replace
    from recsys.item_tokens import ItemTokenizer
    from recsys.models.recgpt import RecGPT, RecGPTConfig

    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(n, E), dim=-1)
    cfg = replace(RecGPTConfig.tiny(E), **{"tokenizer.max_suffix": 64})
    tok = ItemTokenizer(cfg.tokenizer).eval()
    tok.build_table(emb)
    model = RecGPT(replace(cfg, tokenizer=tok.config))
    model.set_catalog(tok, emb)
    return model.eval(), emb


def test_own_catalog_changes_nothing_and_known_items_keep_their_scores():
    model, emb = _tiny_recgpt()
    ids, texts = [str(i) for i in range(20)], [f"item {i}" for i in range(20)]
    cat = Catalog.of(ids, texts, "int")
    hist = [[1, 2, 3], [4]]
    before = model.score_all(hist)
    # the same catalog reversed: nothing is added, scores are the same columns reordered
    rev = RecData(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), [], ids[::-1], texts[::-1], "int")
    with_catalog(model, cat, rev, embed=lambda t: pytest.fail("nothing should be embedded"))
    assert model.num_items == 20
    torch.testing.assert_close(model.score_all([[18, 17, 16], [15]]), before.flip(1))
    # a catalog of 5 known items + 3 new ones (one reuses a known id for another item): known scores are unchanged
    model, _ = _tiny_recgpt()
    new_ids = ["2", "5", "7", "1", "0", "5x", "6x", "3"]
    new_texts = ["item 2", "item 5", "item 7", "item 1", "item 0", "new a", "new b", "other item 3"]
    g = torch.Generator().manual_seed(1)
    items = RecData(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), [], new_ids, new_texts, "str")
    model, out = with_catalog(model, cat, items,
                              embed=lambda t: torch.nn.functional.normalize(torch.randn(len(t), E, generator=g), dim=-1))
    assert model.num_items == 8 and out.ids == new_ids and len(torch.unique(model.items.codes, dim=0)) == 8
    now = model.score_all([[3, 0], [1]])  # histories [1, 2] and [5] in the old numbering
    torch.testing.assert_close(now[:, :5], _tiny_recgpt()[0].score_all([[1, 2], [5]])[:, [2, 5, 7, 1, 0]])


def test_zero_shot_model_saves_and_loads_with_its_catalog(tmp_path):
    model, _ = _tiny_recgpt()
    cat = Catalog.of([str(i) for i in range(20)], [f"item {i}" for i in range(20)], "int")
    items = RecData(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), [], ["a", "b", "1"], ["x", "y", "item 1"],
                    "str")
    g = torch.Generator().manual_seed(2)
    model, out = with_catalog(model, cat, items,
                              embed=lambda t: torch.nn.functional.normalize(torch.randn(len(t), E, generator=g), dim=-1))
    save_recommender(model, tmp_path / "m", out)
    back, ids, kind = load_recommender(tmp_path / "m")
    assert ids == ["a", "b", "1"] and kind == "str" and load_catalog(tmp_path / "m").fingerprints == out.fingerprints
    torch.testing.assert_close(back.score_all([[2, 0]]), model.score_all([[2, 0]]))


def test_sasrec_ranks_a_subset_of_its_catalog_but_cannot_add_items():
    from recsys.models.sasrec import SASRec, SASRecConfig

    torch.manual_seed(0)
    sas = SASRec(SASRecConfig.tiny(num_items=10)).eval()
    before = sas.score_all([[1, 2]])
    cat = Catalog.of([str(i) for i in range(10)], [""] * 10, "int")  # id-only data: the id is the identity
    sub = RecData(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), [], ["2", "1", "6"], ["", "", ""], "int")
    with_catalog(sas, cat, sub)
    torch.testing.assert_close(sas.score_all([[1, 0]]), before[:, [2, 1, 6]])
    new = RecData(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), [], ["2", "99"], ["", "a book"], "int")
    with pytest.raises(DataError, match="cannot add items from their text"):
        with_catalog(SASRec(SASRecConfig.tiny(num_items=10)), cat, new)


# -- end to end: recipes -> recsys evaluate / score ------------------------------------------------------------------
def test_evaluating_on_a_catalog_whose_ids_mean_other_items_is_a_clear_error(recgpt_dir, catalogs, capsys):
    from recsys.cli import main as cli

    meta = json.loads((recgpt_dir / "items.json").read_text())
    assert len(meta["item_text_fingerprints"]) == 30 and Path(meta["text_encoder"]).is_dir()
    assert cli(["evaluate", "--model", str(recgpt_dir), "--data", str(catalogs[1])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("recsys evaluate: error: 16 of the 20 items of ")
    assert "id '5' is 'book 5 " in err[0] and "--catalog" in err[0]
    # the model's own data still evaluates
    assert cli(["evaluate", "--model", str(recgpt_dir), "--data", str(catalogs[0]), "--split", "valid"]) == 0


@pytest.mark.parametrize("which", ["recgpt", "setrec"])
def test_zero_shot_evaluate_and_score_on_a_new_catalog(which, request, catalogs, tmp_path, capsys):
    from recsys.cli import main as cli

    model_dir = request.getfixturevalue(f"{which}_dir")
    out = tmp_path / "m.json"
    assert cli(["evaluate", "--model", str(model_dir), "--data", str(catalogs[1]), "--catalog", "--out",
                str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["catalog"] == "data" and res["catalog_items"] == 30 and res["interactions_with_unknown_items"] == 0
    assert res["split"]["test_cases"] == 30 and 0 <= res["metrics"]["ndcg@10"]["mean"] <= 1
    # the items B shares with A keep what the model learned (and what the recipe's co-occurrence expert counted);
    # everything else was added from text (the expert's z-scores are per catalog, so its parts are compared)
    model, cat = open_recommender(model_dir, catalogs[1] / "items.csv")
    base, _, _ = load_recommender(model_dir)
    assert type(base).__name__ == "WithCooccurrence"  # the recipes' default
    for new_part, old_part in zip(model.part_scores([[0, 1]]), base.part_scores([[0, 1]])):
        torch.testing.assert_close(new_part[:, :4], old_part[:, :4])
    # scoring speaks the new catalog's ids
    recs = tmp_path / "r.parquet"
    assert cli(["score", "--model", str(model_dir), "--input", str(catalogs[1] / "interactions.csv"), "--out",
                str(recs), "--k", "5", "--catalog", str(catalogs[1] / "items.csv"), "--quiet"]) == 0
    df = pd.read_parquet(recs)
    b_ids = set(pd.read_csv(catalogs[1] / "items.csv")["item_id"])
    assert len(df) == 30 * 5 and set(df["item_id"]) <= b_ids and df["error"].isna().all()
    assert cli(["score", "--engine", "ray", "--model", str(model_dir), "--input", str(catalogs[1] / "items.csv"),
                "--out", str(tmp_path / "ray"), "--catalog", str(catalogs[1] / "items.csv")]) == 2
    assert "not supported with --engine ray yet" in capsys.readouterr().err


def test_old_model_directories_load_and_match_by_id_with_a_warning(recgpt_dir, catalogs, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(recgpt_dir, old)
    meta = json.loads((old / "items.json").read_text())
    (old / "items.json").write_text(json.dumps({"item_ids": meta["item_ids"], "id_kind": meta["id_kind"]}))
    from recsys.cli import main as cli

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli(["evaluate", "--model", str(old), "--data", str(catalogs[0]), "--split", "valid"]) == 0
    assert any(issubclass(w.category, CatalogWarning) and "matched by id alone" in str(w.message) for w in caught)
