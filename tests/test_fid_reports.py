"""rFID / gFID wherever a feature network is given: the image evaluation, the generator recipe, `gentok fid`'s
functions; each checked against a direct NumPy/SciPy Frechet distance on a small feature network of our own (the
Inception weights are never needed offline), and the CLI refusing to run without weights."""

from __future__ import annotations

import io
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg
from torch import nn

import gentok
from gentok.quantizers.vq import VQConfig
from gentok.tokenizers.image.titok import TiTok, TiTokConfig

ROOT = Path(__file__).resolve().parents[1]


class TinyFeatures(nn.Module):
    """A fixed random conv net: images (b, 3, H, W) -> {"features": (b, 12), "logits": (b, 5)}."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv, self.head = nn.Conv2d(3, 12, 3, stride=2), nn.Linear(12, 5)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.5

    def forward(self, x):
        f = torch.tanh(self.conv(x.float())).mean((2, 3))
        return {"features": f, "logits": self.head(f)}


def _numpy_fid(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().numpy(), b.double().numpy()
    m1, m2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))


def _feats(net, images):
    with torch.no_grad():
        return net(images)["features"]


def _tokenizer(seed=0):
    torch.manual_seed(seed)
    return TiTok(TiTokConfig(image_size=16, patch_size=8, num_tokens=4, width=32, enc_depth=1, dec_depth=1, heads=2,
                             refine_channels=4, quantizer=VQConfig(dim=8, codebook_size=32, cosine=False)))


def _folder(path: Path, n: int, seed: int, side: int = 16) -> Path:
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, format="PNG")
        (path / f"{i:03d}.png").write_bytes(buf.getvalue())
    return path


def _load(path: Path) -> torch.Tensor:
    from gentok.data.photos import image_paths, load_image

    return torch.stack([load_image(p) for p in image_paths(path)])


# a random tiny tokenizer reconstructs every image alike: singular covariances are expected
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_image_evaluation_reports_rfid_of_the_reconstructions(tmp_path, capsys):
    from gentok.evaluation.image import evaluate_image_tokenizer, reconstruct, write_report

    model, net = _tokenizer().eval(), TinyFeatures()
    images = torch.rand(24, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    dataset = [images[i] for i in range(len(images))]
    report = evaluate_image_tokenizer(model, dataset, distribution_features=net, batch_size=10)
    recon, _ = reconstruct(model, images)
    assert report["rfid"] == pytest.approx(_numpy_fid(_feats(net, images), _feats(net, recon)), rel=1e-6, abs=1e-9)
    from gentok.metrics import inception_score

    with torch.no_grad():
        assert report["inception_score"] == pytest.approx(inception_score(net(recon)["logits"], 10)[0], rel=1e-9)
    assert 0 <= report["precision"] <= 1 and 0 <= report["recall"] <= 1
    write_report(report, model, dataset, str(tmp_path))
    assert "rFID" in capsys.readouterr().out and json.loads((tmp_path / "eval.json").read_text())["rfid"] > 0
    assert "rfid" not in evaluate_image_tokenizer(model, dataset)  # no weights: weight-free metrics only


def test_folders_against_folders_and_statistics_files(tmp_path):
    from gentok.evaluation.fid import fid_of_folders

    net = TinyFeatures()
    a, b = _folder(tmp_path / "a", 20, 0), _folder(tmp_path / "b", 24, 1, side=20)  # b: 20 px, centre-cropped
    out = fid_of_folders(a, net, ref=b, size=16, batch_size=7, save_stats=tmp_path / "a.npz")
    from gentok.data.views import eval_view

    fb = _feats(net, torch.stack([eval_view(x, 16) for x in _load(b)]))
    assert out["fid"] == pytest.approx(_numpy_fid(_feats(net, _load(a)), fb), rel=1e-6)
    assert out["n_fake"] == 20 and out["n_real"] == 24 and "precision" in out and out["skipped"] == 0
    # the saved statistics of a, as the reference of b, give the same distance (FID is symmetric)
    again = fid_of_folders(b, net, ref=tmp_path / "a.npz", size=16)
    assert again["fid"] == pytest.approx(out["fid"], rel=1e-6) and "precision" not in again
    assert fid_of_folders(a, net, ref=a, size=16)["fid"] == pytest.approx(0, abs=1e-6)
    (a / "broken.png").write_bytes(b"not a png")  # skipped and counted, never fatal
    assert fid_of_folders(a, net, ref=b, size=16)["skipped"] == 1
    with pytest.raises(ValueError, match="neither a folder"):
        fid_of_folders(a, net, ref=tmp_path / "missing", size=16)


# a random tiny tokenizer reconstructs every image alike: singular covariances are expected
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_reconstruction_fid_of_a_folder_matches_the_direct_computation(tmp_path):
    from gentok.evaluation.fid import reconstruction_fid

    model, net = _tokenizer().eval(), TinyFeatures()
    folder = _folder(tmp_path / "imgs", 18, 3)
    out = reconstruction_fid(model, folder, net, batch_size=5, save_stats=tmp_path / "ref.npz")
    x = _load(folder)
    with torch.no_grad():
        recon = model.decode(model.encode(x)).clamp(0, 1)
    assert out["rfid"] == pytest.approx(_numpy_fid(_feats(net, x), _feats(net, recon)), rel=1e-6)
    saved = np.load(tmp_path / "ref.npz")
    assert np.allclose(saved["mu"], _feats(net, x).double().mean(0).numpy())


def test_fid_command_needs_inception_weights(tmp_path, capsys):
    from gentok.cli import main

    folder = _folder(tmp_path / "imgs", 3, 0)
    assert main(["fid", str(folder), "--ref", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "needs the Inception weights" in err and "--download-inception" in err and "Traceback" not in err
    assert main(["fid", str(folder), "--ref", str(folder), "--inception-weights", str(tmp_path / "none.pth")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["fid", str(folder), "--ref", str(folder), "--tokenizer", "x", "--download-inception"]) == 2
    assert "exclude each other" in capsys.readouterr().err


# a random tiny tokenizer reconstructs every image alike: singular covariances are expected
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_generator_recipe_reports_gfid_when_weights_are_given(tmp_path, monkeypatch):
    import gentok.evaluation.fid as fid_mod

    tok_dir = tmp_path / "tok"
    _tokenizer().save_pretrained(tok_dir)
    seen = []
    monkeypatch.setattr(fid_mod, "inception_features", lambda w, d, device=None: seen.append((w, d)) or TinyFeatures())
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"")  # the recipe checks the file exists; the network is the tiny one above
    common = ["--tokenizer", str(tok_dir), "--data", str(_folder(tmp_path / "photos", 10, 5, side=24)),
              "--preset", "tiny", "--max-steps", "2", "--num-images", "16", "--samples", "2", "--k", "2",
              "--set", "train.batch_size=4", "--set", "train.eval_every=0", "--set", "train.warmup_steps=1",
              "--inception-weights", str(weights), "--fid-samples", "12"]
    recipe = runpy.run_path(str(ROOT / "recipes" / "generator.py"), run_name="gfid_test")
    recipe["main"]([*common, "--model", "ar", "--output-dir", str(tmp_path / "ar")])
    gfid = json.loads((tmp_path / "ar" / "summary.json").read_text())["gfid"]
    assert seen == [(str(weights), False)] and gfid["n_fake"] == 12 and gfid["gfid"] > 0
    assert "held-out" in gfid["against"] and "precision" in gfid
    # against a reference statistics file: FID and IS only
    from gentok.metrics.distribution import FeatureStats

    FeatureStats.from_features(torch.randn(30, 12)).save(tmp_path / "ref.npz")
    recipe = runpy.run_path(str(ROOT / "recipes" / "generator.py"), run_name="gfid_test")
    recipe["main"]([*common, "--output-dir", str(tmp_path / "asarm"), "--fid-reference", str(tmp_path / "ref.npz")])
    gfid = json.loads((tmp_path / "asarm" / "summary.json").read_text())["gfid"]
    assert gfid["against"] == str(tmp_path / "ref.npz") and "precision" not in gfid and gfid["n_real"] == 30


def test_recipes_refuse_a_missing_inception_file_before_training(tmp_path):
    from gentok.cli.errors import UsageError

    titok = runpy.run_path(str(ROOT / "recipes" / "titok.py"), run_name="titok_flags")
    with pytest.raises(UsageError, match="--inception-weights .*no such file"):
        titok["main"](["--inception-weights", str(tmp_path / "x.pth"), "--output-dir", str(tmp_path / "o")])
