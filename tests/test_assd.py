"""ASSD is exact: its output law, computed by enumerating every draft / accept / reject / resample branch, equals the
AS-ARM's fixed-order joint; plus a Monte Carlo chi-square check and the algorithm's invariants."""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest
import torch
from scipy.stats import chisquare

from gentok.generators import ASARM, ASARMConfig
from gentok.sampling import assd, process_logits, sequential
from gentok.sampling.assd import start_state
from gentok.sampling.basic import TorchChooser
from gentok.sampling.exact import enumerate_outcomes

V, L = 3, 4


def peaky_model(seed: int, vocab: int = V, length: int = L, dtype=torch.float64) -> ASARM:
    """Random weights, scaled up so conditionals are far from uniform and drafts really get rejected."""
    torch.manual_seed(seed)
    m = ASARM(ASARMConfig(vocab_size=vocab, seq_len=length, dim=16, depth=2, heads=2))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim >= 1 and "norm" not in name:
                p.normal_(0, 1.0)
    return m.to(dtype).eval()


def target_joint(model, prompt_ids, prompt_mask, order, temperature=1.0, top_k=0) -> dict[tuple, float]:
    """The model's joint over all completions of the prompt in the fixed order: one density pass per completion."""
    st = start_state(prompt_ids[None], prompt_mask[None], order[None], None, L, V)
    ranks = st.ranks
    free = [i for i in range(L) if not prompt_mask[i]]
    out = {}
    pos = torch.arange(L)[None]
    for values in itertools.product(range(V), repeat=len(free)):
        ids = prompt_ids.clone()
        ids[free] = torch.tensor(values)
        with torch.no_grad():
            probs = process_logits(model(ids[None], ranks, pos, ranks), temperature, top_k)[0]
        p = 1.0
        for i in free:
            p *= float(probs[i, ids[i]])
        out[tuple(ids.tolist())] = p
    return out


def assd_law(model, prompt_ids, prompt_mask, order, k, temperature=1.0, top_k=0):
    """Exact output law of `assd` by enumeration: the sampler as users call it (keys and values kept across passes;
    the recomputing path is held token-identical to it below) is re-run once per leaf of its decision tree (drafts,
    accept/reject coins, residual resamples, next drafts; `enumerate_outcomes`). Also returns the probability that
    the first round rejects a draft."""
    law: dict[tuple, float] = defaultdict(float)
    rejections = 0.0

    def run(chooser):
        return assd(model, prompt_ids[None], prompt_mask[None], k=k, temperature=temperature, top_k=top_k,
                    order=order, chooser=chooser)

    drafts = min(k, int((~prompt_mask).sum()))  # the first round's drafts
    for prob, out in enumerate_outcomes(run):
        law[tuple(out.ids[0].tolist())] += prob
        rejections += prob * (out.accepted[0][:1] < [drafts])  # the first round rejected one
    return dict(law), rejections


CASES = [  # (k, prompt positions, temperature, top_k, model seed)
    (2, [], 1.0, 0, 0),
    (3, [], 1.0, 0, 2),
    (3, [2], 1.0, 0, 5),
    (2, [0], 1.5, 2, 2),
]


@pytest.mark.parametrize("k,prompt_pos,temperature,top_k,seed", CASES)
def test_assd_exact_by_enumeration(k, prompt_pos, temperature, top_k, seed):
    model = peaky_model(seed)
    prompt_ids = torch.tensor([1, 2, 0, 1])
    prompt_mask = torch.zeros(L, dtype=torch.bool)
    prompt_mask[prompt_pos] = True
    order = torch.tensor([2, 0, 3, 1])  # a fixed, non-raster generation order
    want = target_joint(model, prompt_ids, prompt_mask, order, temperature, top_k)
    got, rejections = assd_law(model, prompt_ids, prompt_mask, order, k, temperature, top_k)
    assert abs(sum(got.values()) - 1.0) < 1e-9
    assert rejections > 0.1, "the test model must make ASSD reject drafts, or exactness is untested"
    for seq in set(want) | set(got):
        assert abs(got.get(seq, 0.0) - want.get(seq, 0.0)) < 1e-6, seq


def test_assd_monte_carlo_chi_square():
    model = peaky_model(seed=3, dtype=torch.float32)
    n = 2000
    prompt_ids = torch.zeros(n, L, dtype=torch.long)
    prompt_mask = torch.zeros(n, L, dtype=torch.bool)
    order = torch.tensor([1, 3, 0, 2])
    out = assd(model, prompt_ids, prompt_mask, k=3, order=order, seed=1234)
    want = target_joint(model.double(), prompt_ids[0], prompt_mask[0], order)
    counts = defaultdict(int)
    for row in out.ids.tolist():
        counts[tuple(row)] += 1
    keys = sorted(want, key=want.get)
    # pool the rarest cells until every expected count is >= 5 (chi-square validity)
    obs, exp, acc_o, acc_e = [], [], 0, 0.0
    for key in keys:
        acc_o += counts.get(key, 0)
        acc_e += n * want[key]
        if acc_e >= 5:
            obs.append(acc_o)
            exp.append(acc_e)
            acc_o, acc_e = 0, 0.0
    obs[-1] += acc_o
    exp[-1] += acc_e
    assert sum(obs) == n
    assert chisquare(obs, exp).pvalue > 1e-3
    assert sum(a < 3 for row in out.accepted for a in row) > 0  # rejections happened


def random_prompts(b: int, length: int, vocab: int, rate: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(vocab, (b, length), generator=g)
    mask = torch.rand(b, length, generator=g) > rate
    return ids, mask


def test_first_draft_is_the_verifier_distribution():
    """What ASSD's exactness rests on: drafting k targets in parallel (one shared cutoff) gives the first of them the
    very distribution its verification query computes once the drafts are placed (q_1 == p_1), while later
    verification queries do see the earlier drafts (otherwise nothing would ever be rejected)."""
    model = peaky_model(seed=5, vocab=7, length=10, dtype=torch.float32)
    ids, mask = random_prompts(6, 10, 7, 0.7, seed=0)
    mask[:, :4] = False  # at least 4 targets per row
    st = start_state(ids, mask, "random", TorchChooser(0), 10, 7)
    q_pos = st.targets[:, :4]  # the first 4 targets of each row, drafted given the prompt only (cutoff 1)
    with torch.no_grad():
        q = model(st.ids, st.ranks, q_pos, torch.ones_like(q_pos))
        drafted = st.ids.scatter(1, q_pos, torch.randint(7, q_pos.shape))
        p = model(drafted, st.ranks, q_pos, torch.arange(1, 5).expand(6, 4))  # each sees the drafts before it
    torch.testing.assert_close(p[:, 0], q[:, 0], atol=1e-5, rtol=0)
    assert float((p[:, 1:] - q[:, 1:]).abs().max()) > 1e-3


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_nfe_at_most_tokens_and_first_draft_kept(k):
    model = peaky_model(seed=7, vocab=7, length=12, dtype=torch.float32)
    for rate, seed in ((0.5, 0), (0.95, 1), (1.0, 2)):
        ids, mask = random_prompts(16, 12, 7, rate, seed)
        out = assd(model, ids, mask, k=k, seed=seed)
        assert torch.equal(out.ids[mask], ids[mask]), "the prompt must be kept"
        assert (out.nfe <= out.generated).all()
        assert torch.equal(out.generated, (~mask).sum(1))
        assert all(a >= 1 for row in out.accepted for a in row), "the first draft of a round is never rejected"
        assert all(a <= k for row in out.accepted for a in row)


def test_k1_reproduces_sequential_and_seeds_are_deterministic():
    model = peaky_model(seed=2, vocab=7, length=12, dtype=torch.float32)
    ids, mask = random_prompts(8, 12, 7, 0.75, seed=3)
    seq = sequential(model, ids, mask, seed=11)
    one = assd(model, ids, mask, k=1, seed=11)
    assert torch.equal(seq.ids, one.ids) and torch.equal(seq.nfe, one.nfe)
    assert torch.equal(seq.nfe, seq.generated)
    a = assd(model, ids, mask, k=4, seed=5, temperature=0.9, top_p=0.9)
    b = assd(model, ids, mask, k=4, seed=5, temperature=0.9, top_p=0.9)
    c = assd(model, ids, mask, k=4, seed=6, temperature=0.9, top_p=0.9)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.nfe, b.nfe) and a.accepted == b.accepted
    assert not torch.equal(a.ids, c.ids)


def test_bad_input_is_rejected():
    model = peaky_model(seed=0, dtype=torch.float32)
    ids = torch.zeros(2, L, dtype=torch.long)
    mask = torch.zeros(2, L, dtype=torch.bool)
    with pytest.raises(ValueError, match="bool"):
        assd(model, ids, mask.long())
    with pytest.raises(ValueError, match="shape"):
        assd(model, ids, mask[:, :3])
    with pytest.raises(ValueError, match="seq_len"):
        assd(model, torch.zeros(2, L + 1, dtype=torch.long), torch.zeros(2, L + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        assd(model, ids + 5, ~mask)
    with pytest.raises(ValueError, match="permutation"):
        assd(model, ids, mask, order=torch.tensor([0, 0, 1, 2]))
    with pytest.raises(ValueError, match="k must"):
        assd(model, ids, mask, k=0)


def test_positions_outside_the_prompt_are_never_read():
    """Only given positions must hold valid ids: anything elsewhere (padding, garbage) changes nothing."""
    model = peaky_model(seed=0, dtype=torch.float32)
    ids = torch.tensor([[1, 0, 2, 0], [0, 2, 0, 1]])
    mask = torch.tensor([[True, False, True, False], [False, True, False, True]])
    garbage = torch.where(mask, ids, torch.tensor([[-1, 99, 7, -5]]))
    for sampler in (lambda x: assd(model, x, mask, k=2, seed=3), lambda x: sequential(model, x, mask, seed=3)):
        a, b = sampler(ids), sampler(garbage)
        assert torch.equal(a.ids, b.ids) and torch.equal(a.ids[mask], ids[mask])
    with pytest.raises(ValueError, match="integer"):
        assd(model, ids.float(), mask)


# -- the KV cache across passes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate,seed", [(0.5, 0), (0.9, 1), (1.0, 2)])
def test_cached_samplers_equal_the_full_recomputation(rate, seed):
    """Same seed, same draws: keeping keys and values across passes changes no token, no NFE and no acceptance, with
    ragged prompts, rows that finish early and a row with nothing to sample."""
    model = peaky_model(seed=2, vocab=7, length=12)
    ids, mask = random_prompts(6, 12, 7, rate, seed)
    mask[1] = True  # nothing to sample in this row
    for k in (1, 3, 5):
        a = assd(model, ids, mask, k=k, seed=seed, top_k=5)
        b = assd(model, ids, mask, k=k, seed=seed, top_k=5, use_cache=False)
        assert torch.equal(a.ids, b.ids) and torch.equal(a.nfe, b.nfe) and a.accepted == b.accepted
    a = sequential(model, ids, mask, seed=seed)
    b = sequential(model, ids, mask, seed=seed, use_cache=False)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.nfe, b.nfe) and torch.equal(a.ids[mask], ids[mask])
