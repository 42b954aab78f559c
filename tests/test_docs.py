"""The docs say what the code and the results say.

- Every number README.md and docs/*.md quote from `benchmarks/results/*.json` equals its JSON: generated tables are
  re-rendered by `tools/docs_tables.py` and compared, inline quotes are resolved through the JSON path they carry.
- README.md is a guide: at most ~350 lines, a table of contents, the three-line quick start, links that resolve.
- Every ```python and ```bash block of README.md runs as written (or is marked `<!-- no-test -->`, a small set), in
  a temporary directory where the fixture saved tiny models at the paths the examples use (`outputs/titok/model`, ...):
  Python blocks are executed in order, `gentok` / `recsys` commands run through their CLIs in-process, and
  `accelerate launch` commands (minutes of training) are parsed by accelerate's and the recipe's own parsers.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.DOTALL | re.MULTILINE)
NO_TEST = "<!-- no-test -->"
MAX_README_LINES = 350
MAX_NO_TEST_BLOCKS = 2


def _tool():
    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "tools" / "docs_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


docs_tables = _tool()


def _docs() -> list[Path]:
    return docs_tables.doc_paths(ROOT)


# -- quoted numbers ---------------------------------------------------------------------------------------------------
def test_generated_tables_equal_their_json():
    stale = [str(p.relative_to(ROOT)) for p in _docs() if docs_tables.render(p.read_text(), p.name) != p.read_text()]
    assert stale == [], f"tables out of date with benchmarks/results (run python -m tools.docs_tables): {stale}"


def test_inline_quotes_equal_their_json():
    bad = [line for p in _docs() for line in docs_tables.bad_quotes(p.read_text(), str(p.relative_to(ROOT)))]
    assert bad == []


def test_headline_numbers_are_covered():
    """The results at a glance and every results page carry generated tables or checked quotes (so the two tests
    above cannot pass by checking nothing)."""
    readme = README.read_text()
    assert "<!-- results:glance -->" in readme
    uncovered = []
    for name in ("quantizers", "titok", "flextok", "binary", "image_tokenizers", "pretrained", "generators", "audio",
                 "mergedna", "recsys", "engines", "training"):
        text = (ROOT / "docs" / f"{name}.md").read_text()
        if not (docs_tables.TABLE_RE.search(text) or any(docs_tables.quotes(text))):
            uncovered.append(name)
    assert uncovered == []
    used = {m.group("name") for p in _docs() for m in docs_tables.TABLE_RE.finditer(p.read_text())}
    assert used == set(docs_tables.TABLES), f"tables rendered nowhere: {sorted(set(docs_tables.TABLES) - used)}"


def test_a_wrong_quote_or_table_is_caught():
    text = "held-out 18.83 dB<!-- titok_small_multiscale.json: by_source[source=matplotlib,scale=all].psnr -->"
    assert docs_tables.bad_quotes(text, "x") == []
    assert len(docs_tables.bad_quotes(text.replace("18.83", "18.84"), "x")) == 1
    assert len(docs_tables.bad_quotes(text.replace("18.83", "18.8"), "x")) == 0  # fewer decimals: rounding to them
    assert len(docs_tables.bad_quotes(text.replace("psnr -->", "psnrr -->"), "x")) == 1  # a path that is not there
    diff = ("+1.06 dB<!-- titok_small_multiscale.json: by_source[source=matplotlib,scale=all].psnr - "
            "by_source[source=matplotlib,scale=all].baseline_psnr -->")
    assert docs_tables.bad_quotes(diff, "x") == []
    assert docs_tables.bad_quotes("a range 2.45<!-- sampling.json: assd[mask_rate=0.95,k=4].nfe_ratio -->-2.63x"
                                  "<!-- sampling.json: assd[mask_rate=0.95,k=8].nfe_ratio -->", "x") == []
    table = "<!-- results:dna -->\n| stale |\n<!-- /results -->\n"
    assert docs_tables.render(table) != table and docs_tables.render(docs_tables.render(table)) == docs_tables.render(table)


def test_quoted_value_rounding():
    assert docs_tables.quoted_value("\u22122.5") == (-2.5, 1)
    assert docs_tables.quoted_value("1,692") == (1692.0, 0)
    assert docs_tables.matches("0.49", 0.4884) and not docs_tables.matches("0.48", 0.4884)
    assert docs_tables.matches("30", 29.95) and not docs_tables.matches("29", 29.95)


# -- the README as a guide ----------------------------------------------------------------------------------------------
def _blocks(text: str):
    """(language, code, line number, marked no-test) for every fenced block."""
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        yield m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1, before.strip() == NO_TEST


def test_readme_is_a_short_guide_with_contents_and_quick_start():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_README_LINES
    assert "## Contents" in text
    quick = text[text.index("## Quick start"):]
    _lang, code, _, _ = next(_blocks(quick))
    assert code.splitlines() == ['pip install -e ".[test]"', "accelerate launch recipes/titok.py", "pytest"]


def _slug(heading: str) -> str:
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def test_links_between_pages_resolve():
    bad = []
    for page in _docs():
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"https?://", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                bad.append(f"{page.name}: {target}")
            elif anchor and dest.suffix == ".md":
                slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(), re.MULTILINE)}
                if anchor not in slugs:
                    bad.append(f"{page.name}: {target} (no such heading)")
    assert bad == []


# -- the README's code runs as written ----------------------------------------------------------------------------
IMG = {"image_size": 16, "patch_size": 8, "num_tokens": 4, "width": 16, "enc_depth": 1, "dec_depth": 1, "heads": 2}


def _save_tiny_models(root: Path) -> None:
    """Tiny models at the paths the README's examples read, plus the files they name."""
    from PIL import Image

    from gentok.generators.asarm import ASARM, ASARMConfig
    from gentok.generators.maskgit import MaskGITBert, MaskGITConfig
    from gentok.quantizers import BinaryConfig, FSQConfig, ResidualVQConfig, VQConfig
    from gentok.tokenizers.audio.codec import AudioCodec, CodecConfig
    from gentok.tokenizers.dna.mergedna import MergeDNA, MergeDNAConfig
    from gentok.tokenizers.image.binary import BinaryTokenizer, BinaryTokenizerConfig
    from gentok.tokenizers.image.flextok import FlexTok, FlexTokConfig
    from gentok.tokenizers.image.titok import TiTok, TiTokConfig
    from recsys.data import load_data
    from recsys.models.sasrec import SASRec, SASRecConfig
    from recsys.saving import save_recommender

    torch.manual_seed(0)
    out = root / "outputs"
    titok = TiTok(TiTokConfig(**IMG, quantizer=VQConfig(dim=4, codebook_size=16, cosine=False))).eval()
    titok.save_pretrained(out / "titok" / "model")
    FlexTok(FlexTokConfig(**IMG, quantizer=FSQConfig(dim=3, levels=(5, 4, 3)), token_mixing=True,
                          sample_steps=2)).eval().save_pretrained(out / "flextok" / "model")
    BinaryTokenizer(BinaryTokenizerConfig(**IMG, quantizer=BinaryConfig(dim=6, bits=6))).eval().save_pretrained(
        out / "binary" / "model")
    ASARM(ASARMConfig(vocab_size=titok.vocab_size, seq_len=4, dim=16, depth=1, heads=2)).eval().save_pretrained(
        out / "generator" / "model")
    AudioCodec(CodecConfig(sample_rate=16000, channels=4, ratios=(4, 5), dim=8, dilations=(1,),
                           quantizer=ResidualVQConfig(dim=8, num_quantizers=3, codebook_size=16),
                           mel_windows=(64, 128))).eval().save_pretrained(out / "audio_codec" / "model")
    MergeDNA(MergeDNAConfig(seq_len=32, window=4, dim=16, heads=2, local_depth=1, latent_depth=1, latent_dec_depth=1,
                            local_dec_depth=1, tokens_per_window=2, train_tokens=(2, 4))).eval().save_pretrained(
        out / "mergedna" / "model")
    data = load_data(None)
    save_recommender(SASRec(SASRecConfig.tiny(num_items=data.num_items)).eval(), out / "sasrec" / "model", data)
    official = root / "checkpoints" / "tokenizer_titok_b64_imagenet"
    official.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(ROOT / "tests" / "fixtures" / "official" / "titok_b64" / name, official / name)
    # `gentok generate`: the official TiTok-L-32 tokenizer fixture and a tiny MaskGIT generator over its ids (1024
    # codes, 32 tokens, ImageNet's 1000 classes) at the paths of the published snapshots
    official_l32 = root / "checkpoints" / "tokenizer_titok_l32_imagenet"
    official_l32.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(ROOT / "tests" / "fixtures" / "official" / "titok_l32" / name, official_l32 / name)
    MaskGITBert(MaskGITConfig(vocab_size=1024, seq_len=32, num_classes=1000, dim=16, depth=1, heads=2,
                              mlp_dim=32)).eval().save_pretrained(root / "checkpoints" / "generator_titok_l32_imagenet")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "photo.jpg")
    (root / "photos").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(root / "photos" / f"p{i}.png")


class _Parsed(Exception):
    """Raised in place of running a recipe once its flags have parsed."""


def _check_launch(argv: list[str], where: str) -> None:
    """`accelerate launch [options] recipes/X.py [flags]`: accelerate's parser takes the options, the recipe's own
    parser its flags (the recipe stops right after parsing; nothing trains)."""
    from accelerate.commands.launch import launch_command_parser

    assert argv[:2] == ["accelerate", "launch"], where
    args = launch_command_parser().parse_args(argv[2:])
    script = ROOT / args.training_script
    assert script.is_file() and script.parent.name == "recipes", f"{where}: {args.training_script}"
    spec = importlib.util.spec_from_file_location(f"readme_recipe_{script.stem}", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    argparse.ArgumentParser.parse_args = parse_then_stop
    try:
        with pytest.raises(_Parsed):
            mod.main(args.training_script_args)
    finally:
        argparse.ArgumentParser.parse_args = original


def _run_shell(code: str, where: str) -> None:
    from gentok.cli import main as gentok_cli
    from recsys.cli import main as recsys_cli

    for line in code.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if not argv:
            continue
        if argv[0] == "gentok":
            assert gentok_cli(argv[1:]) == 0, f"{where}: {line}"
        elif argv[0] == "recsys":
            assert recsys_cli(argv[1:]) == 0, f"{where}: {line}"
        elif argv[0] == "accelerate":
            _check_launch(argv, f"{where}: {line}")
        else:
            raise AssertionError(f"{where}: no way to run {argv[0]!r} here; mark the block {NO_TEST}")


def test_readme_code_blocks_run_as_written(tmp_path, monkeypatch, capsys):
    torch.set_num_threads(1)
    _save_tiny_models(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ran, skipped = 0, 0
    for lang, code, line, no_test in _blocks(README.read_text()):
        where = f"README.md:{line}"
        if no_test:
            skipped += 1
            continue
        if lang == "python":
            exec(compile(code, where, "exec"), {"__name__": "__readme__"})  # noqa: S102 - the README's own code
        elif lang == "bash":
            _run_shell(code, where)
        else:
            raise AssertionError(f"{where}: a ```{lang} block is neither python nor bash; mark it {NO_TEST}")
        ran += 1
    assert skipped <= MAX_NO_TEST_BLOCKS and ran >= 10
    assert (tmp_path / "recs.parquet").is_file() and (tmp_path / "tokens").is_dir()
