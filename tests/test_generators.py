"""Generators: KV-cache decoding equals the full pass, masks match a double-loop reference, the any-subset model's
conditionals ignore everything they must not see, save/load identity, and both models overfit one batch."""

from __future__ import annotations

import pytest
import torch

from gentok.checkpoint import _MODELS, read_config
from gentok.generators import (
    ASARM,
    ARConfig,
    ARTransformer,
    ASARMConfig,
    ASARMLoss,
    ar_loss,
    attention_mask,
    random_ranks,
)
from gentok.training import TrainConfig, fit


def ar_model(num_classes=0, seed=0):
    torch.manual_seed(seed)
    return ARTransformer(ARConfig(vocab_size=11, seq_len=9, num_classes=num_classes, dim=32, depth=2, heads=4)).eval()


def asarm_model(seed=0):
    torch.manual_seed(seed)
    return ASARM(ASARMConfig(vocab_size=11, seq_len=8, dim=32, depth=2, heads=4)).eval()


@pytest.mark.parametrize("num_classes", [0, 3])
def test_kv_cache_decode_matches_full_forward(num_classes):
    model = ar_model(num_classes)
    ids = torch.randint(11, (3, 9))
    cond = torch.tensor([0, 2, 1]) if num_classes else None
    with torch.no_grad():
        full = model(ids, cond)  # (3, 10, V)
        cache = model.new_cache()
        rows = [model(ids[:, :0], cond, cache=cache)]  # start position only
        rows += [model(ids[:, :3], cond, cache=cache)]  # a chunk of 3
        rows += [model(ids[:, i:i + 1], cond, cache=cache) for i in range(3, 9)]  # one by one
        torch.testing.assert_close(torch.cat(rows, 1), full, atol=1e-5, rtol=1e-5)
        assert cache.length == 10
        cache.crop(4)  # roll back to start + 3 tokens and decode again
        again = model(ids[:, 3:], cond, cache=cache)
        torch.testing.assert_close(again, full[:, 4:], atol=1e-5, rtol=1e-5)


def test_ar_is_causal_and_validates_input():
    model = ar_model()
    ids = torch.randint(11, (2, 9))
    changed = ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 11
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[:, :6], model(changed)[:, :6])
        assert not torch.allclose(model(ids)[:, 6:], model(changed)[:, 6:])
    with pytest.raises(ValueError, match="exceeds seq_len"):
        model(torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 11\)"):
        model(torch.full((1, 3), 11))
    with pytest.raises(ValueError, match="class-conditional"):
        ar_model(num_classes=3)(ids)
    with pytest.raises(ValueError, match="divisible"):
        ARConfig(dim=30, heads=4)


def test_asarm_mask_matches_double_loop():
    torch.manual_seed(0)
    ranks = random_ranks(3, 6, torch.tensor([2, 6, 4]))
    see = torch.randint(0, 8, (3, 5))
    mask = attention_mask(ranks, see)[:, 0]
    L, Q = 6, 5
    for b in range(3):
        for row in range(L + Q):
            for key in range(L + Q):
                if row < L and key < L:
                    want = bool(ranks[b, key] <= ranks[b, row])
                elif row < L:
                    want = False
                elif key < L:
                    want = bool(ranks[b, key] < see[b, row - L])
                else:
                    want = row == key
                assert bool(mask[b, row, key]) == want, (b, row, key)


def test_random_ranks_are_a_prompt_plus_an_order():
    g = torch.Generator().manual_seed(0)
    T = torch.tensor([1, 3, 7, 7])
    ranks = random_ranks(4, 7, T, generator=g)
    for row, t in zip(ranks, T.tolist()):
        assert int((row == 0).sum()) == 7 - t
        assert sorted(row[row > 0].tolist()) == list(range(1, t + 1))


def test_asarm_conditionals_see_exactly_their_context():
    model = asarm_model()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(11, (4, 8), generator=g)
    ranks = random_ranks(4, 8, torch.tensor([3, 5, 8, 8]), generator=g)
    pos = torch.arange(8).expand(4, 8)
    with torch.no_grad():
        base = model(ids, ranks, pos, ranks)
        for r in range(1, 6):
            # change every token of rank >= r: the conditionals of ranks <= r must not move, later ones must
            changed = torch.where(ranks >= r, (ids + 1) % 11, ids)
            out = model(changed, ranks, pos, ranks)
            early = (ranks <= r) & (ranks > 0)
            torch.testing.assert_close(out[early], base[early], atol=1e-5, rtol=1e-5)
            late = ranks > r
            assert (out[late] - base[late]).abs().amax() > 1e-4
        # a query never reads the content at its own position
        q = model(ids, ranks, pos[:, :1], torch.full((4, 1), 9))
        other = ids.clone()
        other[:, 0] = (other[:, 0] + 1) % 11
        q_other = model(other, ranks, pos[:, :1], torch.full((4, 1), 9))
        assert (q - q_other).abs().amax() > 0  # it does read other positions' content...
        ranks0 = ranks.clone()
        ranks0[:, 0] = 99  # ...but position 0 itself, once above the cutoff, is invisible
        torch.testing.assert_close(model(ids, ranks0, pos[:, :1], torch.full((4, 1), 9)),
                                   model(other, ranks0, pos[:, :1], torch.full((4, 1), 9)))


def test_asarm_validates_input():
    model = asarm_model()
    ids = torch.zeros(2, 8, dtype=torch.long)
    ranks = torch.zeros(2, 8, dtype=torch.long)
    pos = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="ranks"):
        model(ids, ranks[:, :5], pos, pos)
    with pytest.raises(ValueError, match="query_pos"):
        model(ids, ranks, pos + 8, pos)
    with pytest.raises(ValueError, match="differ"):
        model(ids, ranks, pos, pos[:, :2])


@pytest.mark.parametrize("make", [ar_model, asarm_model])
def test_save_load_identity(make, tmp_path):
    model = make()
    model.save_pretrained(tmp_path / "m")
    loaded = type(model).from_pretrained(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    # the registry finds them under the type names `gentok.load` reads from config.json
    assert _MODELS["generator.ar"] is ARTransformer and _MODELS["generator.asarm"] is ASARM
    assert read_config(tmp_path / "m")["type"] == model.model_type


class Rows(torch.utils.data.Dataset):
    def __init__(self, ids):
        self.ids = ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i]


@pytest.mark.parametrize("kind", ["ar", "asarm"])
def test_overfits_one_batch(kind, tmp_path):
    torch.manual_seed(0)
    data = torch.randint(11, (8, 8))
    if kind == "ar":
        model = ARTransformer(ARConfig(vocab_size=11, seq_len=8, dim=32, depth=2, heads=4))
        loss_fn = ar_loss
    else:
        model = ASARM(ASARMConfig(vocab_size=11, seq_len=8, dim=32, depth=2, heads=4))
        loss_fn = ASARMLoss(ramp_batches=20, start=0.5)
    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=120, batch_size=8, lr=3e-3, warmup_steps=5,
                      checkpoint_every=0, eval_every=0, progress=False, log_every=40)
    model.eval()
    with torch.no_grad():
        torch.manual_seed(1)
        before = float(loss_fn(model, data)[0])
    result = fit(model, Rows(data), cfg, loss_fn=loss_fn)
    with torch.no_grad():
        torch.manual_seed(1)
        after = float(loss_fn(result.model, data)[0])
    # the any-subset loss keeps a floor: at masking rate ~1 the first target has no context at all
    assert after < (0.35 if kind == "ar" else 0.5) * before, (before, after)
    if kind == "asarm":
        assert int(result.model.seen_batches) == 120
        assert loss_fn.max_rate(0) == 0.5 and loss_fn.max_rate(10) == 0.75 and loss_fn.max_rate(999) == 1.0


# -- the shared trunk keeps checkpoints loading ------------------------------------------------------------------------
def test_generator_configs_share_one_base_and_old_config_json_loads():
    from gentok.config import from_dict, to_dict
    from gentok.generators.trunk import GeneratorConfig

    assert issubclass(ARConfig, GeneratorConfig) and issubclass(ASARMConfig, GeneratorConfig)
    # config.json as written before the shared base existed (its own field order, its own class name)
    old_ar = {"_class": "ARConfig", "vocab_size": 11, "seq_len": 9, "num_classes": 3, "dim": 32, "depth": 2,
              "heads": 4, "mlp_ratio": 4.0, "dropout": 0.0}
    old_asarm = {"_class": "ASARMConfig", "vocab_size": 11, "seq_len": 8, "dim": 32, "depth": 2, "heads": 4,
                 "mlp_ratio": 4.0, "dropout": 0.0}
    ar_cfg, asarm_cfg = from_dict(old_ar), from_dict(old_asarm)
    assert type(ar_cfg) is ARConfig and ar_cfg.num_classes == 3 and ar_cfg.seq_len == 9
    assert type(asarm_cfg) is ASARMConfig
    assert to_dict(ar_cfg) == old_ar and to_dict(asarm_cfg) == old_asarm  # same names and values written back
    for bad in (dict(depth=0), dict(dim=30, heads=4), dict(vocab_size=1)):
        for cls in (ARConfig, ASARMConfig):
            with pytest.raises(ValueError):
                cls(**bad)
    with pytest.raises(ValueError, match="num_classes"):
        ARConfig(num_classes=-1)


def test_parameter_names_are_those_of_saved_checkpoints():
    """The names a checkpoint saved before the shared trunk holds; a rename would make old models fail to load."""
    blocks = {k for k in ar_model().state_dict() if k.startswith("blocks.")}
    assert blocks and blocks == {k for k in asarm_model().state_dict() if k.startswith("blocks.")}
    trunk = {"tok_emb.weight", "pos_emb", "norm.weight", "norm.bias", "head.weight"}
    assert set(ar_model().state_dict()) - blocks == trunk | {"bos"}
    assert set(ar_model(num_classes=3).state_dict()) - blocks == trunk | {"class_emb.weight"}
    assert set(asarm_model().state_dict()) - blocks == trunk | {"query_emb", "seen_batches"}
    assert ar_model().pos_emb.shape[0] == 10 and asarm_model().pos_emb.shape[0] == 8  # AR: + the start position


def test_generators_reject_bad_ids():
    for model, extra in ((ar_model(), ()), (asarm_model(), None)):
        for bad, match in ((torch.zeros(2, 3), "integer"), (torch.zeros(2, 3, 1, dtype=torch.long), "shape"),
                           (torch.full((2, 3), -1), r"\[0, 11\)"), ([[0, 1]], "tensor")):
            args = extra if extra is not None else (torch.zeros(2, 3, dtype=torch.long),) * 3
            with pytest.raises(ValueError, match=match):
                model(bad, *args)


# -- token caches -------------------------------------------------------------------------------------------------------
class FakeTokenizer:
    """Maps each item (a scalar tensor) to fixed ids; counts encode calls; optionally returns a ragged batch."""

    def __init__(self, ragged: bool = False):
        self.calls, self.ragged = 0, ragged

    def eval(self):
        return self

    def encode(self, batch):
        from gentok.tokenizers.tokens import Tokens

        self.calls += 1
        ids = (batch.long()[:, None] + torch.arange(4)) % 7  # (b, 4)
        lengths = torch.full((len(batch),), 4)
        if self.ragged:
            ids[:, -1], lengths = -1, lengths - 1
        return Tokens(ids, lengths)


def test_pretokenize_reads_tokens_ids_and_caches_by_fingerprint(tmp_path):
    from gentok.generators.data import pretokenize

    data = [torch.tensor(i) for i in range(10)]
    tok = FakeTokenizer()
    ids = pretokenize(tok, data, tmp_path / "c.safetensors", "fp1", batch_size=4)
    assert ids.dtype == torch.long and ids.shape == (10, 4)
    assert torch.equal(ids, (torch.arange(10)[:, None] + torch.arange(4)) % 7)
    calls = tok.calls
    assert torch.equal(pretokenize(tok, data, tmp_path / "c.safetensors", "fp1", batch_size=4), ids)
    assert tok.calls == calls  # read back, not recomputed
    pretokenize(tok, data, tmp_path / "c.safetensors", "fp2", batch_size=4)
    assert tok.calls > calls  # another tokenizer: recomputed
    with pytest.raises(ValueError, match="padded"):
        pretokenize(FakeTokenizer(ragged=True), data, tmp_path / "r.safetensors", "fp1")


# -- the static KV cache -----------------------------------------------------------------------------------------------
def test_static_cache_writes_in_place_and_rolls_back():
    """Decoding never reallocates the cache (one buffer, same storage every step), `crop` only moves lengths, and the
    old `layers` view still reads the filled part."""
    model = ar_model()
    ids = torch.randint(11, (2, 9))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        model(ids[:, :2], cache=cache)
        ptr = cache.k.data_ptr()
        for i in range(2, 9):
            model(ids[:, i:i + 1], cache=cache)
            assert cache.k.data_ptr() == ptr
        assert cache.length == 10 and cache.layers[0][0].shape == (2, 4, 10, 8)
        cache.crop(3)
        assert cache.k.data_ptr() == ptr and cache.lengths == [3, 3]
        torch.testing.assert_close(model(ids[:, 2:], cache=cache), full[:, 3:], atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="crop"):
            cache.crop(11)
        with pytest.raises(ValueError, match="exceeds seq_len"):
            model(ids[:, :1], cache=cache)


def test_ragged_cache_rows_continue_from_their_own_lengths():
    """Rows cropped to different lengths and decoded together equal each row decoded alone (and the full pass)."""
    model = ar_model(num_classes=3)
    ids = torch.randint(11, (3, 9))
    cond = torch.tensor([2, 0, 1])
    keep = [2, 5, 3]  # cached positions per row (start + keep - 1 tokens)
    with torch.no_grad():
        full = model(ids, cond)
        cache = model.new_cache()
        model(ids[:, :6], cond, cache=cache)
        cache.crop(keep)
        with pytest.raises(ValueError, match="lengths"):
            cache.length
        nxt = torch.stack([ids[r, keep[r] - 1:keep[r] + 2] for r in range(3)])  # 3 new tokens per row
        out = model(nxt, cond, cache=cache)
        assert cache.lengths == [k + 3 for k in keep]
        for r in range(3):
            torch.testing.assert_close(out[r], full[r, keep[r]:keep[r] + 3], atol=1e-5, rtol=1e-5)
        picked = cache.select(torch.tensor([1]))
        assert picked.lengths == [8]
        torch.testing.assert_close(model(ids[1:2, 7:8], cond[1:2], cache=picked)[0, 0], full[1, 8], atol=1e-5,
                                   rtol=1e-5)


def test_asarm_cached_extension_equals_the_full_pass():
    """`ASARM.extend`: content added to a cache over several passes (prompt first, then targets in rank order, a
    padded ragged batch, a dropped draft) answers queries exactly as the full pass does."""
    model = asarm_model()
    g = torch.Generator().manual_seed(3)
    b, L = 3, 8
    ids = torch.randint(11, (b, L), generator=g)
    ranks = random_ranks(b, L, torch.tensor([5, 8, 3]), generator=g)
    order = (ranks + (ranks == 0) * -100).argsort(1)  # prompt first, then targets by rank
    prompt = (ranks == 0).sum(1).tolist()
    cache = model.new_cache(extra=2 * L)  # ragged rows: the longest cached row + the widest pass (C + Q)
    held = [0] * b
    with torch.no_grad():
        for upto in ([p for p in prompt], [p + 1 for p in prompt], [p + 3 for p in prompt], [L] * b):
            upto = [min(u, L) for u in upto]
            count = [u - h for u, h in zip(upto, held)]
            C = max(max(count), 1)
            pos = torch.zeros(b, C, dtype=torch.long)
            rk = torch.full((b, C), 1 << 40)
            for r in range(b):
                pos[r, :count[r]] = order[r, held[r]:upto[r]]
                rk[r, :count[r]] = ranks[r, pos[r, :count[r]]]
            x = ids.gather(1, pos)
            # query every position, seeing the first `upto` content slots (ranks < upto - prompt + 1)
            qpos = torch.arange(L).expand(b, L)
            see = torch.tensor(upto)[:, None] - torch.tensor(prompt)[:, None] + 1
            got = model.extend(cache, x, pos, rk, count, qpos, (torch.tensor(upto)[:, None]).expand(b, L))
            want = model(ids, ranks, qpos, see.expand(b, L))
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            assert cache.lengths == upto
            held = upto
        cache.crop([p + 1 for p in prompt])  # roll back to prompt + first target and ask again
        see = torch.full((b, L), 2)
        got = model.extend(cache, ids[:, :1], torch.zeros(b, 1, dtype=torch.long), torch.full((b, 1), 1 << 40),
                           [0] * b, torch.arange(L).expand(b, L), torch.tensor(prompt)[:, None].expand(b, L) + 1)
        torch.testing.assert_close(got, model(ids, ranks, torch.arange(L).expand(b, L), see), atol=1e-5, rtol=1e-5)


# -- distilling a draft ---------------------------------------------------------------------------------------------
def test_draft_distillation_recipe_raises_acceptance(tmp_path):
    """`recipes/generator.py --draft-for`: a tiny draft trained on KL to a class-conditional target's logits (over
    tokens the target sampled) fits it far better than before training, and so accepts more drafts."""
    import runpy

    from gentok.generators.ar import DistillLoss
    from gentok.sampling import generate, speculative

    torch.manual_seed(0)
    target = ARTransformer(ARConfig(vocab_size=11, seq_len=8, num_classes=3, dim=32, depth=2, heads=4)).eval()
    with torch.no_grad():
        target.head.weight.mul_(6)  # peaked, so a random draft disagrees with it
    target.save_pretrained(tmp_path / "target" / "model")
    recipe = runpy.run_path("recipes/generator.py", run_name="draft_test")
    out = tmp_path / "draft"
    argv = ["--draft-for", str(tmp_path / "target" / "model"), "--preset", "tiny", "--output-dir", str(out),
            "--num-images", "256", "--max-steps", "60", "--k", "3", "--set", "train.batch_size=32",
            "--set", "train.eval_every=0", "--set", "train.checkpoint_every=0", "--set", "train.progress=false",
            "--set", "train.warmup_steps=5", "--set", "train.lr=3e-3"]
    recipe["main"](argv)
    draft = ARTransformer.from_pretrained(out / "model").eval()
    torch.manual_seed(1)
    untrained = ARTransformer(draft.config).eval()
    ids = generate(target, 8, batch_size=64, cond=torch.arange(64) % 3, seed=3).ids  # held-out target samples
    batch = (ids, torch.arange(64) % 3)
    loss = DistillLoss(target)
    with torch.no_grad():
        kl_trained, kl_before = float(loss(draft, batch)[0]), float(loss(untrained, batch)[0])
    assert kl_trained < 0.5 * kl_before, (kl_trained, kl_before)

    def acceptance(d):
        out = speculative(target, d, 8, gamma=3, batch_size=32, cond=torch.arange(32) % 3, seed=0)
        rounds = [a for row in out.accepted for a in row]
        return sum(rounds) / len(rounds)

    assert acceptance(draft) > acceptance(untrained) + 0.3
    import json
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"] == "target samples" and summary["speculative"]["accepted_per_round"] > 0
    # token data of the wrong shape is refused before any training
    from safetensors.torch import save_file
    save_file({"ids": torch.zeros(4, 5, dtype=torch.long), "labels": torch.zeros(4, dtype=torch.long)},
              str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"\(n, 8\)"):
        recipe["main"](argv + ["--draft-tokens", str(tmp_path / "bad.safetensors")])


def test_distill_loss_with_class_dropout_trains_the_unconditional_rows():
    """With cond_drop, a RAR draft is also scored on the null class (what guidance needs); the loss is zero exactly
    when the draft is the target, and it validates its arguments."""
    from gentok.generators.ar import DistillLoss
    from gentok.generators.rar import RAR, RARConfig

    torch.manual_seed(0)
    cfg = RARConfig(vocab_size=16, seq_len=6, num_classes=4, dim=32, depth=1, heads=4, mlp_dim=64)
    target, draft = RAR(cfg).eval(), RAR(cfg).eval()
    with torch.no_grad():
        for p in list(target.parameters()) + list(draft.parameters()):
            p.normal_(0, 0.3)
    ids, cond = torch.randint(16, (8, 6)), torch.randint(4, (8,))
    seen = []

    def spy(ids, cond):  # the draft, recording which class ids it was scored with
        seen.append(cond.clone())
        return draft(ids, cond)

    loss = DistillLoss(target, target.null_class, cond_drop=0.5)
    torch.manual_seed(1)
    kl, _ = loss(spy, (ids, cond))
    assert float(kl.detach()) > 0 and (seen[0] == 4).any() and (seen[0] == cond).any()
    assert float(DistillLoss(target)(target, (ids, cond))[0]) < 1e-6
    with pytest.raises(ValueError, match="null_class"):
        DistillLoss(target, cond_drop=0.1)


def test_draft_recipe_distils_a_rar_draft_for_a_rar_target(tmp_path):
    """`--draft-for` a RAR generator trains a smaller RAR (--draft-shape, model fields overridable) on KL to the
    target, over the target's samples, and reports its acceptance."""
    import json
    import runpy

    from gentok.generators.rar import PRESETS, RAR

    torch.manual_seed(0)
    target = RAR(PRESETS["tiny"]).eval()
    with torch.no_grad():
        for p in target.parameters():
            if p.ndim >= 2:
                p.normal_(0, p.shape[-1] ** -0.5)
    target.save_pretrained(tmp_path / "target" / "model")
    recipe = runpy.run_path("recipes/generator.py", run_name="rar_draft_test")
    recipe["main"](["--draft-for", str(tmp_path / "target" / "model"), "--draft-shape", "tiny",
                    "--set", "model.depth=1", "--output-dir", str(tmp_path / "draft"), "--num-images", "64",
                    "--max-steps", "10", "--set", "train.batch_size=16", "--set", "train.progress=false",
                    "--set", "train.checkpoint_every=0", "--set", "train.eval_every=0", "--set", "train.warmup_steps=2"])
    draft = RAR.from_pretrained(tmp_path / "draft" / "model")
    assert draft.config.depth == 1 and (draft.config.vocab_size, draft.config.seq_len, draft.config.num_classes) == (
        target.config.vocab_size, target.config.seq_len, target.config.num_classes)
    summary = json.loads((tmp_path / "draft" / "summary.json").read_text())
    assert summary["model"] == "rar-draft" and 0 <= summary["speculative"]["acceptance_rate"] <= 1
    assert summary["eval"]["kl"] > 0
