"""Basic sampling and speculative AR sampling: logits processing, the residual, KV-cache sampling equals the uncached
reference, and speculative sampling's output law equals the target's (by enumerating every branch)."""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest
import torch

from gentok.generators import ARConfig, ARTransformer
from gentok.sampling import generate, process_logits, residual, speculative
from gentok.sampling.exact import enumerate_outcomes


def peaky_ar(seed: int, depth: int = 2, vocab: int = 3, seq_len: int = 4) -> ARTransformer:
    torch.manual_seed(seed)
    m = ARTransformer(ARConfig(vocab_size=vocab, seq_len=seq_len, dim=16, depth=depth, heads=2))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" not in name:
                p.normal_(0, 1.0)
    return m.double().eval()


def test_process_logits():
    torch.manual_seed(0)
    logits = torch.randn(5, 10)
    p = process_logits(logits)
    torch.testing.assert_close(p, logits.softmax(-1))
    k = process_logits(logits, top_k=3)
    assert ((k > 0).sum(-1) == 3).all() and torch.allclose(k.sum(-1), torch.ones(5))
    assert torch.equal(k > 0, logits >= logits.topk(3).values[:, -1:])
    n = process_logits(logits, top_p=0.6)
    sorted_p = p.sort(-1, descending=True).values
    kept = (n > 0).sum(-1)
    for row in range(5):  # the smallest prefix of most likely tokens reaching 0.6
        c = int(kept[row])
        assert sorted_p[row, :c].sum() >= 0.6 and (c == 1 or sorted_p[row, :c - 1].sum() < 0.6)
    g = process_logits(logits, temperature=0)
    assert torch.equal(g.argmax(-1), logits.argmax(-1)) and torch.equal(g.sum(-1), torch.ones(5))
    with pytest.raises(ValueError):
        process_logits(logits, top_p=0)


def test_residual_is_a_distribution():
    torch.manual_seed(0)
    p = torch.rand(100, 7).softmax(-1)
    q = torch.rand(100, 7).pow(3).softmax(-1)
    r = residual(p, q)
    assert (r >= 0).all()
    torch.testing.assert_close(r.sum(-1), torch.ones(100))
    assert ((r > 0) == (p > q)).all()
    torch.testing.assert_close(residual(p, p), p)  # unreachable case: stays a distribution


def test_cached_generation_equals_uncached_and_is_seeded():
    model = peaky_ar(0, vocab=9, seq_len=8).float()
    prompt = torch.randint(9, (3, 2))
    a = generate(model, 6, prompt, seed=3, top_k=5)
    b = generate(model, 6, prompt, seed=3, top_k=5, use_cache=False)
    c = generate(model, 6, prompt, seed=4, top_k=5)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.ids[:, :2], prompt)
    assert not torch.equal(a.ids, c.ids)


def ar_joint(model, prompt: list[int], n: int, vocab: int) -> dict[tuple, float]:
    out = {}
    for tail in itertools.product(range(vocab), repeat=n):
        seq = prompt + list(tail)
        with torch.no_grad():
            probs = model(torch.tensor([seq])).softmax(-1)[0]
        p = 1.0
        for j in range(len(prompt), len(seq)):
            p *= float(probs[j, seq[j]])
        out[tuple(seq)] = p
    return out


@pytest.mark.parametrize("prompt,gamma", [([], 2), ([1], 3)])
def test_speculative_output_law_is_the_target(prompt, gamma):
    target, draft = peaky_ar(1), peaky_ar(2, depth=1)
    n = 3  # keeps the decision tree small enough to walk leaf by leaf
    want = ar_joint(target, prompt, n, 3)
    got = defaultdict(float)
    rejected = 0.0
    pids = torch.tensor([prompt], dtype=torch.long)
    for prob, out in enumerate_outcomes(lambda ch: speculative(target, draft, n, pids, gamma=gamma, chooser=ch)):
        got[tuple(out.ids[0].tolist())] += prob
        rejected += prob * sum(a < gamma for a in out.accepted[0][:1])
    assert abs(sum(got.values()) - 1) < 1e-9
    assert rejected > 0.1  # drafts really are rejected
    for seq in want:
        assert abs(got[seq] - want[seq]) < 1e-6, seq


def test_speculative_with_p_equal_q_accepts_everything():
    model = peaky_ar(3, vocab=9, seq_len=12).float()
    out = speculative(model, model, 11, gamma=4, batch_size=4, seed=0)
    for row in out.accepted:
        assert row == [4, 4]  # two full rounds of 4 drafts + a bonus; the 11th token needs no draft
    assert (out.nfe == 3).all() and (out.draft_nfe == 8).all()
    seeded = speculative(model, peaky_ar(4, vocab=9, seq_len=12).float(), 11, gamma=3, batch_size=2, seed=5)
    again = speculative(model, peaky_ar(4, vocab=9, seq_len=12).float(), 11, gamma=3, batch_size=2, seed=5)
    assert torch.equal(seeded.ids, again.ids) and seeded.accepted == again.accepted
    assert (seeded.nfe <= 11).all()


def test_prompts_are_validated():
    model = peaky_ar(seed=0)
    for bad, match in ((torch.zeros(1, 2), "integer"), (torch.full((1, 2), 3), r"\[0, 3\)"),
                       (torch.zeros(2, dtype=torch.long), "shape")):
        with pytest.raises(ValueError, match=match):
            generate(model, 1, bad, seed=0)
        with pytest.raises(ValueError, match=match):
            speculative(model, peaky_ar(seed=1, depth=1), 1, bad, seed=0)


def test_greedy_decoding_with_cache_equals_without():
    model = peaky_ar(5, vocab=9, seq_len=10).float()
    prompt = torch.randint(9, (4, 3))
    a = generate(model, 7, prompt, temperature=0)
    b = generate(model, 7, prompt, temperature=0, use_cache=False)
    assert torch.equal(a.ids, b.ids)
    ids = prompt  # and it is the argmax chain of the full forward
    for _ in range(7):
        ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(a.ids, ids)


def test_sample_step_draws_like_multinomial_and_processes_once():
    from gentok.sampling import TorchChooser, sample_step

    torch.manual_seed(0)
    logits = torch.randn(64, 20)
    tokens, probs = sample_step(logits, TorchChooser(7), temperature=0.7, top_k=5)
    torch.testing.assert_close(probs, process_logits(logits, 0.7, 5))
    want = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(7))[:, 0]
    assert torch.equal(tokens, want) and bool((probs.gather(1, tokens[:, None]) > 0).all())
    with pytest.raises(ValueError):
        sample_step(logits, TorchChooser(0), temperature=-1)


def test_speculative_matches_plain_decoding_when_greedy():
    """Greedy speculative decoding must return the target's greedy chain whatever the draft proposes."""
    target, draft = peaky_ar(6, vocab=9, seq_len=12).float(), peaky_ar(7, depth=1, vocab=9, seq_len=12).float()
    prompt = torch.randint(9, (3, 2))
    want = generate(target, 9, prompt, temperature=0)
    got = speculative(target, draft, 9, prompt, gamma=3, temperature=0, seed=0)
    assert torch.equal(got.ids, want.ids)


# -- batched and guided speculative sampling ----------------------------------------------------------------------------
def peaky_cond_ar(seed: int, depth: int = 2, classes: int = 3, vocab: int = 3, seq_len: int = 4) -> ARTransformer:
    """A class-conditional peaky AR; the last class plays the null (unconditional) label of guidance."""
    torch.manual_seed(seed)
    m = ARTransformer(ARConfig(vocab_size=vocab, seq_len=seq_len, num_classes=classes, dim=16, depth=depth, heads=2))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" not in name:
                p.normal_(0, 1.0)
    return m.double().eval()


def guided_joint(model, prompt: list[int], n: int, vocab: int, label: int, null: int, scale,
                 temperature: float = 1.0, top_k: int = 0) -> dict[tuple, float]:
    """The law of guided sampling: per token, process(uncond + s * (cond - uncond)) of the full (uncached) pass."""
    out = {}
    for tail in itertools.product(range(vocab), repeat=n):
        seq = prompt + list(tail)
        x = torch.tensor([seq, seq])
        with torch.no_grad():
            c, u = model(x, torch.tensor([label, null]))
        s = scale(torch.arange(c.shape[0])[None])[0, :, None] if callable(scale) else scale
        probs = process_logits(u + s * (c - u), temperature, top_k)
        p = 1.0
        for j in range(len(prompt), len(seq)):
            p *= float(probs[j, seq[j]])
        out[tuple(seq)] = p
    return out


def law_of(run, first_round: int) -> tuple[dict, float]:
    """(output law of `run(chooser)` by enumeration (keys: tuples of rows), probability that some row rejected a
    draft in its first round, which drafts `first_round` tokens)."""
    got, rejected = defaultdict(float), 0.0
    for prob, out in enumerate_outcomes(run):
        got[tuple(map(tuple, out.ids.tolist()))] += prob
        rejected += prob * any(row[0] < first_round for row in out.accepted)
    assert abs(sum(got.values()) - 1) < 1e-9
    return got, rejected


def test_batched_speculative_law_is_the_product_of_the_rows_target_laws():
    """Two rows decoded together (different prompts, different acceptance lengths, one cache with per-row lengths):
    their joint law is the product of each row's target law, i.e. batching is one-by-one sampling in law."""
    target, draft = peaky_ar(1), peaky_ar(2, depth=1)
    prompts = [[1], [2]]
    n = 2
    want = [ar_joint(target, p, n, 3) for p in prompts]
    got, rejected = law_of(lambda ch: speculative(target, draft, n, torch.tensor(prompts), gamma=2, chooser=ch), 1)
    assert rejected > 0.1
    for a, pa in want[0].items():
        for b, pb in want[1].items():
            assert abs(got.get((a, b), 0.0) - pa * pb) < 1e-6, (a, b)


@pytest.mark.parametrize("scale,draft_guided", [(2.0, False), ("schedule", True)])
def test_guided_speculative_law_is_the_targets_guided_law(scale, draft_guided):
    """Classifier-free guidance on the target: the output law is the target's guided law, whichever draft proposes
    (unguided, or guided with its own scale) and with a guidance schedule over the sequence."""
    from gentok.sampling.speculative import Conditioned

    target, draft = peaky_cond_ar(3), peaky_cond_ar(4, depth=1)
    if scale == "schedule":
        scale = lambda t: 1.0 + 0.75 * t.double()
    label, null = 1, 2
    n, prompt = 3, [0]
    lab, nul = torch.tensor([label]), torch.tensor([null])
    t_side = Conditioned(target, {"cond": lab}, {"cond": nul}, scale)
    d_side = Conditioned(draft, {"cond": lab}, {"cond": nul}, 1.5) if draft_guided else \
        Conditioned(draft, {"cond": lab})
    want = guided_joint(target, prompt, n, 3, label, null, scale, temperature=0.9)
    got, rejected = law_of(lambda ch: speculative(t_side, d_side, n, torch.tensor([prompt]), gamma=2, chooser=ch,
                                                  temperature=0.9), 2)
    assert rejected > 0.1
    for seq, p in want.items():
        assert abs(got.get((seq,), 0.0) - p) < 1e-6, seq
    # and it is not the unguided law (the test would pass vacuously if guidance did nothing)
    plain = guided_joint(target, prompt, n, 3, label, null, 1.0, 0.9)
    assert max(abs(plain[s] - want[s]) for s in want) > 1e-2


def test_batched_speculative_is_seeded_and_rows_finish_apart():
    """Rows of one batch accept different numbers of drafts and finish in different rounds; seeded runs repeat, the
    greedy chain of every row is the target's, and class ids pass through per row."""
    target = peaky_cond_ar(5, classes=4, vocab=9, seq_len=12).float()
    draft = peaky_cond_ar(6, depth=1, classes=4, vocab=9, seq_len=12).float()
    labels = torch.tensor([0, 1, 2, 3, 1])
    a = speculative(target, draft, 11, gamma=3, cond=labels, batch_size=5, seed=7)
    b = speculative(target, draft, 11, gamma=3, cond=labels, batch_size=5, seed=7)
    c = speculative(target, draft, 11, gamma=3, cond=labels, batch_size=5, seed=8)
    assert torch.equal(a.ids, b.ids) and a.accepted == b.accepted and torch.equal(a.nfe, b.nfe)
    assert not torch.equal(a.ids, c.ids)
    assert len({len(r) for r in a.accepted}) > 1, "rows should need different numbers of rounds"
    assert all(sum(k + 1 for k in row) <= 11 for row in a.accepted)
    greedy = speculative(target, draft, 11, gamma=3, cond=labels, batch_size=5, temperature=0, seed=0)
    want = generate(target, 11, cond=labels, batch_size=5, temperature=0)
    assert torch.equal(greedy.ids, want.ids)
    with pytest.raises(ValueError, match="one class id per row"):
        speculative(target, draft, 2, cond=labels[:3], batch_size=5)


@pytest.mark.parametrize("power", [0.0, 2.75])
def test_guided_speculative_on_rar_follows_the_guided_sampler(power):
    """Speculative decoding of a RAR target under classifier-free guidance with RAR's schedule, drafted by a smaller
    RAR: greedy, every row's chain is the one the guided sampler (`guided_generate`, token-identical to the official
    code) gives; the schedule equals the sampler's at every step; and seeded runs repeat."""
    from gentok.generators.rar import RAR, RARConfig
    from gentok.sampling.guided import guidance_schedule, guided_generate
    from gentok.sampling.speculative import Conditioned, power_cosine

    def rar(depth, seed):
        torch.manual_seed(seed)
        m = RAR(RARConfig(vocab_size=32, seq_len=12, num_classes=5, dim=32, depth=depth, heads=4, mlp_dim=64))
        with torch.no_grad():
            for p in m.parameters():
                if p.ndim >= 2:
                    p.normal_(0, p.shape[-1] ** -0.5)
        return m.eval()

    target, draft = rar(3, 0), rar(1, 1)
    schedule = power_cosine(3.0, power, 12)
    steps = torch.arange(12)
    want_scale = torch.cat([guidance_schedule(int(t), 12, 3.0, power) for t in steps])
    torch.testing.assert_close(schedule(steps), want_scale, atol=1e-6, rtol=0)
    cond = torch.tensor([0, 3, 4])
    null = torch.full_like(cond, 5)
    t_side = Conditioned(target, {"cond": cond}, {"cond": null}, schedule)
    d_side = Conditioned(draft, {"cond": cond}, {"cond": null}, schedule)
    got = speculative(t_side, d_side, 12, gamma=3, batch_size=3, temperature=0)
    want = guided_generate(target, cond, 3.0, power, temperature=0)
    assert torch.equal(got.ids, want.ids)
    a = speculative(t_side, d_side, 12, gamma=3, batch_size=3, seed=4)
    b = speculative(t_side, d_side, 12, gamma=3, batch_size=3, seed=4)
    assert torch.equal(a.ids, b.ids) and a.accepted == b.accepted
