"""FlexTok: nested dropout, any-prefix decoding, rectified-flow training and diffusers scheduler integration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import gentok
from gentok.cli import main as cli
from gentok.evaluation.image import prefix_lengths
from gentok.nn import unpatchify
from gentok.quantizers import FSQConfig
from gentok.sampling.flow import flow_sample, make_scheduler
from gentok.tokenizers.image.flextok import FlexTok, FlexTokConfig, keep_lengths, region_tree
from gentok.tokenizers.tokens import Tokens
from gentok.validate import PAD_ID

K = 8


def _cfg(**kw) -> FlexTokConfig:
    base = dict(image_size=16, patch_size=4, num_tokens=K, width=32, enc_depth=1, dec_depth=1, heads=2,
                quantizer=FSQConfig(dim=3, levels=(5, 4, 3)), sample_steps=3)
    return FlexTokConfig(**{**base, **kw})


def _model(seed=0, **kw) -> FlexTok:
    torch.manual_seed(seed)
    m = FlexTok(_cfg(**kw))
    # zero-initialised output/adaLN layers would make every decode identical: give the decoder a real function
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim >= 1 and (p == 0).all():
                p.normal_(0, 0.2)
    return m.eval()


def test_keep_length_schedules():
    g = torch.Generator().manual_seed(0)
    assert set(keep_lengths("pow2", 4000, 8, g).tolist()) == {1, 2, 4, 8}
    assert set(keep_lengths("pow2", 4000, 6, g).tolist()) == {1, 2, 4, 6}
    assert set(keep_lengths("uniform", 4000, 5, g).tolist()) == {1, 2, 3, 4, 5}
    assert set(keep_lengths("none", 10, 5).tolist()) == {5}
    assert prefix_lengths(8) == [1, 2, 4, 8] and prefix_lengths(6) == [1, 2, 4, 6]
    with pytest.raises(ValueError, match="nested_dropout"):
        _cfg(nested_dropout="geometric")


def test_region_tree_goes_coarse_to_fine():
    m = region_tree(15, 4)  # 4 levels of a k-d tree over a 4 x 4 patch grid
    assert m.shape == (15, 16) and set(m.unique().tolist()) == {0.0, 1.0}
    assert m[0].sum() == 16  # the first token covers the whole image
    for i in range(7):  # two children partition their parent
        assert torch.equal(m[2 * i + 1] + m[2 * i + 2], m[i])
    for lo, hi in ((0, 1), (1, 3), (3, 7), (7, 15)):  # every level tiles the grid
        assert torch.equal(m[lo:hi].sum(0), torch.ones(16))
    assert torch.equal(region_tree(4, 1), torch.ones(4, 1))  # nothing left to split: children repeat the parent


@pytest.mark.parametrize("mixing", [False, True])
def test_dropped_tokens_never_reach_the_decoder(mixing):
    m = _model(token_mixing=mixing)
    codes = torch.randn(2, K, 3)
    for k in (1, 3, K - 1):
        changed = codes.clone()
        changed[:, k:] = torch.randn(2, K - k, 3) * 5
        keep = torch.full((2,), k)
        a, b = m._decoder_registers(codes, keep), m._decoder_registers(changed, keep)
        assert torch.equal(a, b)
        x, s = torch.randn(2, 16, 48), torch.rand(2)
        assert torch.equal(m.velocity(x, s, a), m.velocity(x, s, b))
        # the kept ones do matter (the test is not vacuous)
        changed[:, k - 1] += 1.0
        assert not torch.equal(m.velocity(x, s, m._decoder_registers(changed, keep)), m.velocity(x, s, a))


@pytest.mark.parametrize("mixing", [False, True])
def test_causal_registers_make_prefixes_independent_of_later_registers(mixing):
    m = _model(token_mixing=mixing)
    x = torch.rand(2, 3, 16, 16)
    z = m._encode_latents(x)
    with torch.no_grad():
        m.encoder.latents[4:] += torch.randn(K - 4, 32)
    z2 = m._encode_latents(x)
    assert torch.equal(z[:, :4], z2[:, :4]) and not torch.equal(z[:, 4:], z2[:, 4:])


def test_every_prefix_decodes_to_valid_images_deterministically():
    m = _model()
    x = torch.rand(2, 3, 16, 16)
    tokens = m.encode(x)
    ids = tokens.ids
    assert ids.shape == (2, K) and ids.dtype == torch.long and int(ids.max()) < m.vocab_size
    assert m.tokens_per_item == K and torch.equal(tokens.lengths, torch.full((2,), K))
    assert torch.equal(m.decode(tokens, steps=2), m.decode(ids, steps=2))
    outs = []
    for k in range(1, K + 1):
        y = m.decode(ids[:, :k], steps=2)
        assert y.shape == x.shape and torch.isfinite(y).all() and 0 <= y.min() and y.max() <= 1
        outs.append(y)
    assert not torch.equal(outs[0], outs[-1])  # more tokens, a different image
    assert torch.equal(m.decode(ids[:, :3], steps=3, seed=7), m.decode(ids[:, :3], steps=3, seed=7))
    assert not torch.equal(m.decode(ids[:, :3], steps=3, seed=7), m.decode(ids[:, :3], steps=3, seed=8))
    guided = m.decode(ids[:, :3], steps=3, guidance=3.0)
    assert torch.isfinite(guided).all() and not torch.equal(guided, m.decode(ids[:, :3], steps=3, guidance=1.0))
    # batched == one by one: the seed gives every item the same starting noise, so an item decodes alike in any batch
    assert torch.equal(m.encode(x[1:]).ids, ids[1:])
    alone = torch.cat([m.decode(ids[i:i + 1, :3], steps=2, guidance=2.0) for i in range(2)])
    assert torch.allclose(m.decode(ids[:, :3], steps=2, guidance=2.0), alone, atol=1e-5)


def test_ragged_prefixes_decode_like_each_item_alone():
    """A Tokens batch whose items keep different prefixes (PAD_ID past each length), and the same as bare ids,
    decodes every item as its own prefix would."""
    m = _model(token_mixing=True)
    ids = m.encode(torch.rand(3, 3, 16, 16)).ids
    lengths = torch.tensor([2, K, 5])
    padded = ids.clone()
    padded[torch.arange(K)[None] >= lengths[:, None]] = PAD_ID
    ragged = Tokens(padded, lengths, {"bits_per_code": m.bits_per_code})
    out = m.decode(ragged, steps=2)
    for i, k in enumerate(lengths.tolist()):
        assert torch.allclose(out[i], m.decode(ids[i:i + 1, :k], steps=2)[0], atol=1e-5), i
    assert torch.equal(m.decode(padded, steps=2), out)  # bare ids: the padding marks the lengths
    # a batch trimmed to its longest item (Tokens[...] does this) decodes the same
    assert torch.allclose(m.decode(ragged[[0, 2]], steps=2), out[[0, 2]], atol=1e-5)


def test_velocity_is_the_clean_image_estimate_and_one_step_decodes_it():
    m = _model(token_mixing=True)
    ids = m.encode(torch.rand(2, 3, 16, 16)).ids
    codes = m.quantizer.decode(ids)
    regs = m._decoder_registers(codes, torch.full((2,), K))
    x, s = torch.randn(2, 16, 48), torch.rand(2) * 0.9 + 0.05
    assert torch.allclose(x - s[:, None, None] * m.velocity(x, s, regs), m.predict_x0(x, s, regs), atol=1e-5)
    # one Euler step from sigma = 1 lands exactly on the clean-image estimate from pure noise
    # the seed's noise, the same for every item
    noise = torch.randn(1, 16, 48, generator=torch.Generator().manual_seed(3)).expand(2, -1, -1)
    x0 = m.predict_x0(noise, torch.ones(2), regs)
    one_step = m.decode(ids, steps=1, seed=3)
    expected = (unpatchify(x0, 4, 16, 16).clamp(-1, 1) + 1) / 2
    assert torch.allclose(one_step, expected, atol=1e-5)


def test_decode_rejects_bad_ids():
    m = _model()
    with pytest.raises(ValueError, match="1 <= k"):
        m.decode(torch.zeros(1, K + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        m.decode(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="1 <= k"):  # an item with no ids at all
        m.decode(torch.tensor([[0, 1], [PAD_ID, PAD_ID]]))
    with pytest.raises(ValueError, match="padding"):  # PAD_ID inside an item's length
        m.decode(Tokens(torch.tensor([[0, PAD_ID]]), torch.tensor([2])))
    with pytest.raises(ValueError, match="must lie in"):
        m.decode(torch.full((1, 2), m.vocab_size))
    with pytest.raises(ValueError, match="integer"):
        m.decode(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="steps"):
        m.decode(torch.zeros(1, 2, dtype=torch.long), steps=0)
    with pytest.raises(ValueError, match="shape"):
        m.encode(torch.rand(1, 3, 8, 8))


def test_flow_sample_follows_the_diffusers_scheduler():
    for shift, steps in ((1.0, 5), (3.0, 4)):
        ref = make_scheduler(shift)
        ref.set_timesteps(steps)
        seen = []

        def velocity(x, sigma):
            seen.append(sigma.clone())
            return x * 0.5 + 1.0

        noise = torch.randn(2, 6, 3)
        out = flow_sample(velocity, noise, steps, make_scheduler(shift))
        # the model is conditioned on the scheduler's own timesteps / num_train_timesteps ...
        assert torch.allclose(torch.stack([s[0] for s in seen]), ref.timesteps / 1000)
        # ... and every update is the scheduler's Euler step x + (sigma_next - sigma) * v over its own sigmas
        x = noise.clone()
        for i in range(steps):
            x = x + (ref.sigmas[i + 1] - ref.sigmas[i]) * (x * 0.5 + 1.0)
        assert torch.allclose(out, x, atol=1e-5)
        assert float(ref.sigmas[0]) == 1.0 and float(ref.sigmas[-1]) == 0.0


def test_flow_loss_decreases_on_one_batch():
    torch.manual_seed(0)
    m = FlexTok(_cfg(cfg_dropout=0.0)).train()
    x = torch.nn.functional.interpolate(torch.rand(4, 3, 4, 4), size=(16, 16), mode="bilinear")
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        torch.manual_seed(1)  # the same noise, sigmas and keep lengths every step: one fixed objective
        out = m(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.metrics["flow_loss"]))
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses


def test_save_load_and_cli_round_trip(tmp_path):
    m = _model()
    m.save_pretrained(tmp_path / "model")
    loaded = gentok.load(tmp_path / "model")
    assert type(loaded) is FlexTok and loaded.config == m.config
    x = torch.rand(2, 3, 16, 16)
    ids = m.encode(x).ids
    assert torch.equal(loaded.encode(x).ids, ids)
    assert torch.equal(loaded.decode(ids[:, :2]), m.decode(ids[:, :2]))
    paths = []
    for i in range(2):
        p = tmp_path / f"im{i}.png"
        Image.fromarray((np.random.default_rng(i).random((16, 16, 3)) * 255).astype(np.uint8)).save(p)
        paths.append(str(p))
    tokens = tmp_path / "tokens.safetensors"
    assert cli(["encode", "--model", str(tmp_path / "model"), *paths, "--out", str(tokens)]) == 0
    assert cli(["decode", "--model", str(tmp_path / "model"), str(tokens), "--out", str(tmp_path / "out")]) == 0
    expected = m.decode(m.encode(paths))
    for i in range(2):
        png = np.asarray(Image.open(tmp_path / "out" / f"im{i}.png")).astype(np.float32) / 255
        assert np.abs(png - expected[i].permute(1, 2, 0).numpy()).max() <= 1 / 255 + 1e-6
    # a stored token file of prefixes (here of different lengths) decodes too, through the CLI with options
    ids = m.encode(paths).ids
    prefix = ids.clone()
    prefix[1, 2:] = PAD_ID
    Tokens(prefix, torch.tensor([K, 2]), {"bits_per_code": m.bits_per_code}).save(
        tmp_path / "prefix.safetensors", {"model_type": "flextok", "names": ["a.png", "b.png"]})
    assert cli(["decode", "--model", str(tmp_path / "model"), str(tmp_path / "prefix.safetensors"), "--out",
                str(tmp_path / "coarse"), "--option", "steps=2"]) == 0
    for i, k in enumerate((K, 2)):
        png = np.asarray(Image.open(tmp_path / "coarse" / f"{'ab'[i]}.png")).astype(np.float32) / 255
        api = m.decode(ids[i:i + 1, :k], steps=2)[0]
        assert np.abs(png - api.permute(1, 2, 0).numpy()).max() <= 1 / 255 + 1e-6


def test_evaluation_reports_sampled_and_one_step_quality_per_prefix(tmp_path, capsys):
    """The one image evaluation gives a prefix-decoding, sampling model its per-prefix rate-distortion rows."""
    from gentok.evaluation.image import evaluate_image_tokenizer, image_eval_fn, write_report

    m = _model()
    images = [torch.rand(3, 16, 16) for _ in range(3)]
    report = evaluate_image_tokenizer(m, images, steps=2)
    rows = report["by_tokens"]
    assert [r["tokens"] for r in rows] == prefix_lengths(K) and report["steps"] == 2
    assert report["guidance"] == m.config.guidance and report["bits_per_image"] == K * m.bits_per_token
    for r in rows:
        assert r["bits"] == r["tokens"] * m.bits_per_token
        assert all(np.isfinite(r[key]) for key in ("psnr", "ssim", "one_step_psnr", "one_step_ssim", "baseline_psnr"))
    assert rows[-1]["psnr"] == report["psnr"]  # all K tokens: the headline number
    assert "bits_used" not in report  # not a bit tokenizer
    x = torch.stack(images)
    ids = m.encode(x).ids
    expected = gentok.metrics.psnr(m.decode(ids, steps=1), x).mean()
    assert rows[-1]["one_step_psnr"] == pytest.approx(float(expected), abs=1e-4)
    expected = gentok.metrics.psnr(m.decode(ids[:, :2], steps=2), x).mean()
    assert rows[1]["psnr"] == pytest.approx(float(expected), abs=1e-4)
    written = write_report(report, m, images, str(tmp_path))
    for name in ("eval.json", "prefixes.png", "reconstructions.png"):
        assert (tmp_path / name).is_file(), name
    assert "_tensors" not in written and "1-step PSNR" in capsys.readouterr().out
    # the fit hook: PSNR from all tokens and from one
    hook = image_eval_fn(m, torch.utils.data.DataLoader(x, batch_size=2))
    assert {"psnr", "psnr_k1", "code_usage"} <= set(hook)
    assert hook["psnr"] == pytest.approx(float(gentok.metrics.psnr(m.decode(ids), x).mean()), abs=1e-4)


def test_recipe_under_two_processes_writes_model_report_and_grid(tmp_path):
    """`recipes/flextok.py` (token mixing, FSQ saturation penalty, x-prediction) under accelerate launch on CPU."""
    import json
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "ddp"
    tiny = ["--set", "model.width=32", "--set", "model.enc_depth=1", "--set", "model.dec_depth=1",
            "--set", "model.heads=2", "--set", "train.batch_size=4", "--set", "train.warmup_steps=1",
            "--set", "model.sample_steps=2", "--eval-images", "4", "--max-steps", "3"]
    r = subprocess.run(["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                        "--mixed_precision", "no", "--dynamo_backend", "no", "recipes/flextok.py",
                        "--output-dir", str(out), *tiny], cwd=root, capture_output=True, text=True, timeout=420,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((out / "eval.json").read_text())
    assert [row["tokens"] for row in report["by_tokens"]] == prefix_lengths(32) and report["steps"] == 2
    assert (out / "prefixes.png").is_file()
    model = gentok.load(out / "model")
    assert model.config.token_mixing and model.config.quantizer.saturation_weight == 1.0
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()
             if "train/loss" in json.loads(l)]
    assert max(steps) == 3 and len(steps) == len(set(steps))
