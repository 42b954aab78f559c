"""Adversarial training: hinge losses, the adaptive weight, the delayed start, and a tiny TiTok under `fit`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from gentok.losses.gan import (
    AdversarialConfig,
    AdversarialTraining,
    adaptive_weight,
    hinge_d_loss,
    hinge_g_loss,
    nearest_weight,
    tokenizer_of,
)
from torch import nn

import gentok
from gentok.nn.discriminator import PatchDiscriminator, PatchDiscriminatorConfig
from gentok.quantizers import VQConfig
from gentok.tokenizers.base import TokenizerOutput
from gentok.tokenizers.image.titok import TiTok, TiTokConfig

ROOT = Path(__file__).resolve().parents[1]
SMALL_DISC = PatchDiscriminatorConfig(channels=8, layers=1)  # 8 px toy images


def test_hinge_losses_on_known_logits():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - x): 0, 0.5, 2 -> mean 5/6
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + x): 0, 1, 2 -> mean 1
    assert torch.isclose(hinge_d_loss(real, fake), torch.tensor(0.5 * (5 / 6 + 1)))
    assert torch.isclose(hinge_d_loss(torch.full((4,), 3.0), torch.full((4,), -3.0)), torch.tensor(0.0))
    assert torch.isclose(hinge_g_loss(fake), torch.tensor(1 / 3))


class ToyDecoder(nn.Module):
    """z -> image through two layers; `out` is the last."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 16)
        self.out = nn.Linear(16, 3 * 8 * 8)

    def forward(self, z):
        return self.out(torch.tanh(self.hidden(z))).view(-1, 3, 8, 8)


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    torch.manual_seed(0)
    dec, disc = ToyDecoder(), PatchDiscriminator(PatchDiscriminatorConfig(channels=4, layers=1))
    z, target = torch.randn(5, 4), torch.rand(5, 3, 8, 8)
    recon = dec(z)
    assert nearest_weight(recon) is dec.out.weight  # the last layer, found through the autograd graph
    rec = (recon - target).pow(2).mean()
    g = hinge_g_loss(disc(recon))
    w = adaptive_weight(rec, g, dec.out.weight)
    rec_grad = torch.autograd.grad(rec, dec.out.weight, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g, dec.out.weight, retain_graph=True)[0]
    assert torch.isclose(w, rec_grad.norm() / (g_grad.norm() + 1e-4))
    assert not w.requires_grad and w > 0
    assert adaptive_weight(rec, g, dec.out.weight, max_weight=1e-6) == 1e-6  # clamped
    (rec + w * g).backward()  # the graph survives for the real backward pass


class ToyTokenizer(nn.Module):
    """The smallest 'tokenizer' with a trainable decoder: a TokenizerOutput whose loss is the MSE."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(3 * 8 * 8, 4)
        self.dec = ToyDecoder()

    def forward(self, x):
        recon = self.dec(self.enc(x.flatten(1)))
        return TokenizerOutput(recon, torch.zeros(len(x), 1, dtype=torch.long), (recon - x).pow(2).mean(), {})


def _train(wrapper, steps, x):
    opt = torch.optim.SGD(wrapper.parameters(), lr=0.1)
    out = None
    for _ in range(steps):
        out = wrapper(x)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return out


def test_nothing_adversarial_happens_before_start():
    torch.manual_seed(0)
    tok = ToyTokenizer()
    gan = AdversarialTraining(tok, AdversarialConfig(weight=1.0, start=3, disc=SMALL_DISC)).train()
    x = torch.rand(4, 3, 8, 8)
    disc0 = {k: v.clone() for k, v in gan.discriminator.state_dict().items()}
    plain = tok(x).loss
    out = _train(gan, 3, x)
    assert int(gan.passes) == 3 and gan.active()
    assert float(out.metrics["gan_g_loss"]) == 0 and float(out.metrics["gan_d_loss"]) == 0
    assert all(torch.equal(v, gan.discriminator.state_dict()[k]) for k, v in disc0.items())  # not updated
    assert all(p.grad is None for p in gan.discriminator.parameters())
    # the loss before the start is the tokenizer's own
    torch.manual_seed(0)
    fresh = AdversarialTraining(ToyTokenizer(), AdversarialConfig(start=3, disc=SMALL_DISC)).train()
    assert torch.equal(fresh(x).loss, plain)
    # from the start on both players' terms are in, and the discriminator moves
    out = _train(gan, 1, x)
    assert float(out.metrics["gan_d_loss"]) > 0 and float(out.metrics["gan_adaptive"]) > 0
    assert gan.last_layer == "dec.out.weight"
    assert not all(torch.equal(v, gan.discriminator.state_dict()[k]) for k, v in disc0.items())


def test_the_players_gradients_are_disjoint():
    """The generator term moves only the tokenizer; the discriminator term only the discriminator."""
    torch.manual_seed(0)
    gan = AdversarialTraining(ToyTokenizer(), AdversarialConfig(weight=1.0, start=0, disc=SMALL_DISC)).train()
    x = torch.rand(4, 3, 8, 8)
    out = gan(x)
    out.loss.backward()
    with_both = {k: p.grad.clone() for k, p in gan.named_parameters()}
    # the discriminator's gradient is that of its hinge loss alone
    gan.zero_grad(set_to_none=True)
    fake = gan.tokenizer(x).recon.detach() * 2 - 1
    hinge_d_loss(gan.discriminator(x * 2 - 1), gan.discriminator(fake)).backward()
    for k, p in gan.discriminator.named_parameters():
        assert torch.allclose(with_both[f"discriminator.{k}"], p.grad, atol=1e-6), k


def test_eval_mode_is_the_tokenizer_and_flow_decoders_are_refused():
    torch.manual_seed(0)
    tok = ToyTokenizer()
    gan = AdversarialTraining(tok, AdversarialConfig(start=0, disc=SMALL_DISC)).eval()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(gan(x).loss, tok(x).loss) and int(gan.passes) == 0
    assert tokenizer_of(gan) is tok and tokenizer_of(tok) is tok

    class NoGrad(ToyTokenizer):
        def forward(self, x):
            out = super().forward(x)
            return TokenizerOutput(out.recon.detach(), out.ids, out.loss, {})

    with pytest.raises(ValueError, match="carries no gradient"):
        AdversarialTraining(NoGrad()).train()(x)
    with pytest.raises(ValueError, match="no parameter"):
        AdversarialTraining(tok, last_layer="missing")
    with pytest.raises(ValueError, match="adversarial weight"):
        AdversarialConfig(weight=-1)
    with pytest.raises(ValueError, match="expected images"):
        PatchDiscriminator(SMALL_DISC)(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="too small"):
        PatchDiscriminator(PatchDiscriminatorConfig(layers=3))(torch.zeros(1, 3, 16, 16))


def _tiny_titok():
    torch.manual_seed(0)
    return TiTok(TiTokConfig(image_size=32, patch_size=8, num_tokens=6, width=32, enc_depth=1, dec_depth=1, heads=2,
                             quantizer=VQConfig(dim=8, codebook_size=64), refine_channels=4))


def test_tiny_titok_trains_with_the_gan_under_fit(tmp_path):
    from gentok.data.images import default_image_data
    from gentok.training import TrainConfig, fit

    tok = _tiny_titok()
    gan = AdversarialTraining(tok, AdversarialConfig(weight=0.1, start=2,
                                                     disc=PatchDiscriminatorConfig(channels=8, layers=2)))
    train, held = default_image_data(32, train_length=32, eval_length=4)
    result = fit(gan, train, TrainConfig(output_dir=str(tmp_path), max_steps=5, batch_size=4, warmup_steps=1,
                                         checkpoint_every=0, eval_every=0, num_threads=1, progress=False))
    assert result.model is gan and int(gan.passes) == 5
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "train/loss" in r][-1]
    assert all(torch.isfinite(torch.tensor(v)) for v in last.values())
    assert last["train/gan_d_loss"] > 0  # the adversarial terms were on in the last steps
    # the saved model is the tokenizer alone, loadable as one, with the trained weights
    loaded = gentok.load(tmp_path / "model")
    assert isinstance(loaded, TiTok)
    assert all(torch.equal(v, tok.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert gan.last_layer == "refiner.net.4.weight"  # the refiner's output convolution


@pytest.mark.slow
def test_recipe_with_gan_under_two_processes(tmp_path):
    """`accelerate launch --num_processes 2` with the discriminator switched on after one step: DDP accepts the
    discriminator being unused before the start and used after, and the run ends with a loadable tokenizer."""
    out = tmp_path / "gan"
    tiny = ["--set", "model.width=32", "--set", "model.enc_depth=1", "--set", "model.dec_depth=1",
            "--set", "model.heads=2", "--set", "model.refine_channels=4", "--set", "train.batch_size=4",
            "--set", "train.checkpoint_every=0", "--set", "train.eval_every=0", "--set", "train.warmup_steps=1"]
    cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "recipes/titok.py", "--output-dir", str(out), "--max-steps", "3",
           "--gan-weight", "0.1", "--gan-start", "1", "--gan-channels", "8", "--gan-layers", "2", *tiny]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=420,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/gan_d_loss" in r]
    assert train_rows[-1]["step"] == 3 and train_rows[-1]["train/gan_d_loss"] > 0
    assert all(v == v for v in train_rows[-1].values())  # no NaN
    meta = json.loads((out / "checkpoints" / "step-00000003" / "metadata.json").read_text())
    assert meta["num_processes"] == 2 and meta["config"]["adversarial"]["start_steps"] == 1
    assert isinstance(gentok.load(out / "model"), TiTok)
    report = json.loads((out / "eval.json").read_text())
    assert {r["source"] for r in report["by_source"]} == {"scikit-image", "matplotlib"}
