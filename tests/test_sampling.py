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
