"""The one error policy of gentok's entry points (gentok/cli/errors.py), one test per row of issue 32's table that
the CLI and the recipes own: a user mistake is one line on stderr naming the problem and the fix, exit status 2, no
traceback; `--debug` / `GENTOK_DEBUG=1` shows the traceback; warnings are one line; `gentok --version`."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gentok
from gentok.cli import main as cli
from gentok.cli.errors import UsageError, call
from gentok.generators.base import check_generator
from gentok.quantizers import VQConfig
from gentok.tokenizers.image.titok import TiTok, TiTokConfig

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


@pytest.fixture(scope="module")
def titok_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("titok")
    torch.manual_seed(0)
    TiTok(TiTokConfig(image_size=16, patch_size=8, num_tokens=4, width=32, enc_depth=1, dec_depth=1, heads=2,
                      quantizer=VQConfig(dim=8, codebook_size=32))).eval().save_pretrained(out / "model")
    return out / "model"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        p = folder / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def one_error_line(capsys, prog: str = "gentok") -> str:
    """The stderr of a refused command: exactly one line `PROG: error: ...`, no traceback; returns the message."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    return lines[0][len(f"{prog}: error: "):]


# -- rows of the table ------------------------------------------------------------------------------------------------
def test_unknown_option_lists_the_options_the_model_takes(titok_dir, images, tmp_path, capsys):
    assert cli(["encode", "--model", str(titok_dir), *images, "--out", str(tmp_path / "t.safetensors"),
                "--option", "steps=8"]) == 2
    msg = one_error_line(capsys)
    assert msg.startswith("--option steps: TiTok's encode does not take this option; its options: ")
    assert "sample" in msg and not (tmp_path / "t.safetensors").exists()
    # a known option passes the check and works
    assert cli(["encode", "--model", str(titok_dir), *images, "--out", str(tmp_path / "t.safetensors"),
                "--option", "sample=false"]) == 0
    capsys.readouterr()
    # decode: TiTok's decode takes no options at all
    assert cli(["decode", "--model", str(titok_dir), str(tmp_path / "t.safetensors"), "--out", str(tmp_path / "d"),
                "--option", "steps=8", "--option", "guidance=2"]) == 2
    assert one_error_line(capsys) == ("--option guidance, steps: TiTok's decode does not take these options; it takes "
                                      "no options")


def test_output_locations_of_the_wrong_kind(titok_dir, images, tmp_path, capsys):
    tokens = tmp_path / "t.safetensors"
    assert cli(["encode", "--model", str(titok_dir), *images, "--out", str(tokens)]) == 0
    capsys.readouterr()
    # decode --out an existing file
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"x")
    assert cli(["decode", "--model", str(titok_dir), str(tokens), "--out", str(taken)]) == 2
    assert one_error_line(capsys).startswith(f"--out {taken} is a file; decode writes one file per item into a "
                                             "directory")
    assert taken.read_bytes() == b"x"
    # encode --out a directory
    assert cli(["encode", "--model", str(titok_dir), *images, "--out", str(tmp_path)]) == 2
    msg = one_error_line(capsys)
    assert msg.startswith(f"--out {tmp_path} is a directory; encode writes one token file")
    assert str(tmp_path / "tokens.safetensors") in msg


def test_a_folder_without_engine_says_folders_need_engine_or_a_glob(titok_dir, images, tmp_path, capsys):
    folder = str(Path(images[0]).parent)
    assert cli(["encode", "--model", str(titok_dir), folder, "--out", str(tmp_path / "t.safetensors")]) == 2
    msg = one_error_line(capsys)
    assert msg.startswith(f"{folder} is a folder") and "--engine local" in msg and os.path.join(folder, "*") in msg
    # a missing file is still named as missing
    assert cli(["encode", "--model", str(titok_dir), str(tmp_path / "no.png"), "--out", str(tmp_path / "t")]) == 2
    assert one_error_line(capsys) == f"input file not found: {tmp_path / 'no.png'}"


def test_missing_fasta_through_the_cli_is_named_as_a_missing_file(tmp_path, capsys):
    from gentok.tokenizers.dna.mergedna import PRESETS, MergeDNA

    torch.manual_seed(0)
    MergeDNA(PRESETS["tiny"]).eval().save_pretrained(tmp_path / "dna")
    missing = tmp_path / "missing.fa"
    assert cli(["encode", "--model", str(tmp_path / "dna"), str(missing), "--out", str(tmp_path / "t")]) == 2
    assert one_error_line(capsys) == f"input file not found: {missing}"


def test_missing_token_file_and_model(titok_dir, tmp_path, capsys):
    assert cli(["decode", "--model", str(titok_dir), str(tmp_path / "no.safetensors"), "--out", str(tmp_path)]) == 2
    assert "token file" in one_error_line(capsys)
    assert cli(["info", str(tmp_path / "nowhere")]) == 2
    one_error_line(capsys)


def _recipe_main(name: str):
    return runpy.run_path(str(RECIPES / f"{name}.py"), run_name=f"gentok_recipe_{name}")["main"]


RECIPE_DATA = {  # recipe -> (its --data for a path that does not exist, extra arguments it needs)
    "titok": (["/no/such/dir"], []),
    "flextok": (["/no/such/dir"], []),
    "binary": (["/no/such/dir"], []),
    "audio_codec": (["/no/such/dir"], []),
    "mergedna": (["/no/such/genome.fa"], []),
    "sasrec": (["/no/such/ratings.csv"], []),
    "recgpt": (["/no/such/ratings.csv"], []),
    "setrec": (["/no/such/ratings.csv"], []),
}


@pytest.mark.parametrize("name", sorted(RECIPE_DATA))
def test_every_recipe_refuses_missing_data_in_one_line(name, tmp_path, capsys):
    data, extra = RECIPE_DATA[name]
    status = call(_recipe_main(name), ["--data", *data, "--output-dir", str(tmp_path / "out"), *extra], prog=name)
    assert status == 2
    msg = one_error_line(capsys, name)
    assert "/no/such/" in msg
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_generator_recipe_refuses_missing_data_in_one_line(titok_dir, tmp_path, capsys):
    status = call(_recipe_main("generator"), ["--data", "/no/such/dir", "--tokenizer", str(titok_dir), "--preset",
                                              "tiny", "--output-dir", str(tmp_path / "out")], prog="generator")
    assert status == 2 and "/no/such/dir" in one_error_line(capsys, "generator")
    status = call(_recipe_main("generator"), ["--tokenizer", str(tmp_path / "none"), "--output-dir",
                                              str(tmp_path / "out")], prog="generator")
    assert status == 2 and "is not a saved gentok model" in one_error_line(capsys, "generator")


def test_recipe_as_a_script_exits_2_with_one_line(tmp_path):
    # (`accelerate launch -q` then exits 1 with the recipe's line as the only output; --debug: the policy test)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("GENTOK_DEBUG", None)
    cmd = [sys.executable, str(RECIPES / "titok.py"), "--data", "/no/such/dir", "--output-dir", str(tmp_path / "o")]
    plain = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert plain.returncode == 2, plain.stderr[-2000:]
    assert plain.stderr.strip().splitlines() == [plain.stderr.strip()]
    assert plain.stderr.startswith("titok: error: data /no/such/dir does not exist") and plain.stderr.count("\n") == 1


def test_max_steps_below_the_checkpoint_is_refused_with_what_to_do(tmp_path, capsys):
    from gentok.training import TrainConfig, fit

    torch.manual_seed(0)
    data = [torch.zeros(2)] * 4

    def loss_fn(model, batch):
        return model(batch).pow(2).mean(), {}

    def train(steps: int):
        cfg = TrainConfig(output_dir=str(tmp_path), max_steps=steps, batch_size=2, checkpoint_every=1,
                          warmup_steps=0, num_threads=1, progress=False)
        return fit(torch.nn.Linear(2, 2), data, cfg, loss_fn=loss_fn)

    assert train(3).step == 3
    status = call(lambda argv: train(2), [], prog="titok")
    assert status == 2
    msg = one_error_line(capsys, "titok")
    assert msg.startswith(f"{tmp_path} already holds a run trained to step 3, past max_steps 2: rerun with "
                          "--max-steps 3 or more to continue it")
    assert train(3).step == 3 and train(4).step == 4  # equal resumes (and ends), larger continues


def test_a_tokenizer_where_a_generator_is_expected(titok_dir):
    from gentok.generators import ARTransformer
    from gentok.generators.ar import PRESETS

    tok = gentok.load(titok_dir)
    with pytest.raises(ValueError, match="model is a TiTok tokenizer, not a generator: sampling needs a sequence "
                                         "model over its tokens"):
        check_generator(tok)
    with pytest.raises(ValueError, match="must be a gentok generator .*got Linear"):
        check_generator(torch.nn.Linear(2, 2), "draft")
    from gentok.config import replace

    ar = ARTransformer(replace(PRESETS["tiny"], vocab_size=8, seq_len=4))
    assert check_generator(ar) is ar
    # every sampler checks its model on entry: the same one line, whichever is called
    from gentok.sampling import assd, generate, sequential, speculative
    from gentok.sampling.guided import guided_generate
    from gentok.sampling.maskgit import maskgit_generate

    prompt, mask = torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.bool)
    for run in (lambda: generate(tok, 2), lambda: assd(tok, prompt, mask), lambda: sequential(tok, prompt, mask),
                lambda: guided_generate(tok, torch.zeros(1, dtype=torch.long)),
                lambda: maskgit_generate(tok, torch.zeros(1, dtype=torch.long))):
        with pytest.raises(ValueError, match="^model is a TiTok tokenizer, not a generator"):
            run()
    with pytest.raises(ValueError, match="^target is a TiTok tokenizer"):
        speculative(tok, ar, 2)
    with pytest.raises(ValueError, match="^draft is a TiTok tokenizer"):
        speculative(ar, tok, 2)
    assert generate(ar, 2, seed=0).ids.shape == (1, 2)  # a generator still samples


def test_cli_generate_with_a_tokenizer_as_generator(titok_dir, tmp_path, capsys):
    assert cli(["generate", "--generator", str(titok_dir), "--tokenizer", str(titok_dir), "--classes", "1",
                "--out", str(tmp_path / "gen")]) == 2
    assert one_error_line(capsys).startswith("--generator is a TiTok tokenizer, not a generator: sampling needs")
    assert not (tmp_path / "gen").exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"gentok {gentok.__version__}"
    from importlib.metadata import version

    assert gentok.__version__ == version("gentok")


# -- the policy itself ------------------------------------------------------------------------------------------------
def test_policy_maps_user_mistakes_and_keeps_bugs_loud(capsys, monkeypatch):
    monkeypatch.delenv("GENTOK_DEBUG", raising=False)

    def raising(error):
        def main(argv):
            raise error
        return main

    assert call(raising(UsageError("bad thing\n  fix it")), [], prog="p") == 2
    assert one_error_line(capsys, "p") == "bad thing fix it"
    assert call(raising(FileNotFoundError(2, "No such file or directory", "/x/y")), [], prog="p") == 2
    assert one_error_line(capsys, "p") == "/x/y: no such file or directory"
    assert call(raising(IsADirectoryError(21, "Is a directory", "/x")), [], prog="p") == 2
    assert one_error_line(capsys, "p") == "/x: is a directory"
    with pytest.raises(KeyError):  # a bug is not a user mistake: its traceback stays
        call(raising(KeyError("k")), [], prog="p")
    # --debug is taken out of argv, and it (or GENTOK_DEBUG=1) prints the traceback above the same line
    seen = []
    assert call(lambda argv: seen.append(argv) or 0, ["a", "--debug", "b"]) == 0 and seen == [["a", "b"]]
    assert call(raising(UsageError("bad")), ["--debug"], prog="p") == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1] == "p: error: bad"
    monkeypatch.setenv("GENTOK_DEBUG", "1")
    assert call(raising(UsageError("bad")), [], prog="p") == 2
    assert "Traceback" in capsys.readouterr().err
    # statuses: an int is returned as is, anything else (a recipe's FitResult) is 0
    assert call(lambda argv: 3, []) == 3 and call(lambda argv: object(), []) == 0


def test_warnings_print_as_one_line(tmp_path):
    # in a fresh process: pytest records warnings itself, so what a user's terminal shows is seen only outside it
    script = tmp_path / "warn.py"
    script.write_text("import warnings\n"
                      "from gentok.cli.errors import call\n"
                      "def main(argv):\n"
                      "    warnings.warn('averaged the channels of 1 multi-channel file(s) to mono: a.wav', UserWarning)\n"
                      "before = warnings.formatwarning\n"
                      "assert call(main, [], prog='gentok') == 0 and warnings.formatwarning is before\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GENTOK_DEBUG", None)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "gentok: warning: averaged the channels of 1 multi-channel file(s) to mono: a.wav\n"
