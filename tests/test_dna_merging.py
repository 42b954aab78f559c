"""Properties of MergeDNA's token merging: exact counts, contiguous in-window groups, exact size-weighted means."""

import pytest
import torch
from gentok.losses.dna import adaptive_token_mask, mask_bases

from gentok.tokenizers.dna.fasta import MASK, N
from gentok.tokenizers.dna.merging import (
    bipartite_merge,
    global_merge,
    lengths_to_assignment,
    merge_schedule,
    min_tokens,
    offsets_in_token,
    source_to_dense,
    unmerge,
)


def _start(B, t, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, t, d, generator=g)
    return x, torch.ones(B, t), torch.eye(t).expand(B, t, t).contiguous()


def _assert_contiguous_partition(source):
    """Every column (base) belongs to exactly one token; every token covers one run; tokens are in base order."""
    assert torch.allclose(source.sum(1), torch.ones(source.shape[0], source.shape[2]))
    for row in source:
        prev_end = 0
        for tok in row:
            idx = torch.nonzero(tok).flatten()
            assert len(idx) > 0 and idx[0] == prev_end and (idx == torch.arange(idx[0], idx[-1] + 1)).all()
            prev_end = int(idx[-1]) + 1


def test_each_merge_step_removes_exactly_r_and_keeps_exact_means():
    x0, sizes, source = _start(5, 16, 8)
    x, keys = x0, x0
    for r in merge_schedule(16, 3, 4):
        before = x.shape[1]
        x, sizes, source = bipartite_merge(x, keys, sizes, source, r)
        keys = x
        assert x.shape[1] == before - r and sizes.shape[1] == before - r
        _assert_contiguous_partition(source)
        assert torch.equal(sizes, source.sum(-1))  # group sizes are the bases each token covers
        assert torch.allclose(sizes.sum(-1), torch.full((5,), 16.0))  # and they sum to the sequence length
        # size-weighted averaging of averages == the plain mean of the original vectors of the group
        assert torch.allclose(x, source @ x0 / sizes[..., None], atol=1e-5)
    assert x.shape[1] == 3


def test_unmerge_is_constant_within_groups_and_inverts_on_group_means():
    x0, sizes, source = _start(3, 16, 4, seed=1)
    x, sizes, source = bipartite_merge(x0, x0, sizes, source, 8)
    x, sizes, source = bipartite_merge(x, x, sizes, source, 3)
    assign = lengths_to_assignment(sizes.long(), 16)
    back = unmerge(x, assign)
    assert torch.allclose(back, source.transpose(1, 2) @ x)  # gather == S^T @ tokens
    for b in range(3):
        for tok in range(x.shape[1]):
            cols = source[b, tok].bool()
            assert torch.allclose(back[b, cols], x[b, tok].expand(int(cols.sum()), -1))
    off = offsets_in_token(sizes.long(), assign)
    assert (off >= 0).all() and (off < sizes.long().gather(1, assign)).all()


def test_merges_follow_similarity():
    # two obvious pairs of identical neighbours: (0, 1) and (2, 3) merge; the dissimilar tail does not
    keys = torch.tensor([[[1.0, 0], [1, 0], [0, 1], [0, 1], [1, 1], [-1, 1]]])
    x, sizes, source = bipartite_merge(keys, keys, torch.ones(1, 6), torch.eye(6)[None], 2)
    assert sizes.tolist() == [[2.0, 2.0, 1.0, 1.0]]


def test_padding_never_joins_real_bases():
    x0, sizes, source = _start(1, 8, 4, seed=2)
    real = torch.tensor([[1.0, 1, 1, 0, 0, 0, 0, 0]])
    x, sizes, source = bipartite_merge(x0, x0, sizes, source, 4, real)
    frac = (source @ real[0]) / sizes
    assert ((frac == 0) | (frac == 1)).all()


def test_schedule_and_limits():
    for window, layers in ((16, 3), (8, 2), (32, 4)):
        for t in range(min_tokens(window, layers), window + 1):
            sched = merge_schedule(window, t, layers)
            cur = window
            for r in sched:
                assert 0 <= r <= cur // 2
                cur -= r
            assert cur == t
    with pytest.raises(ValueError, match="between 2 and 16"):
        merge_schedule(16, 1, 3)
    x, sizes, source = _start(1, 6, 2)
    with pytest.raises(ValueError, match="at most 3"):
        bipartite_merge(x, x, sizes, source, 4)


def test_global_merge_reaches_target_and_composes_sources():
    x0, _, _ = _start(2, 20, 4, seed=3)
    lengths = torch.randint(1, 5, (2, 20)).float()
    eye = torch.eye(20).expand(2, 20, 20).contiguous()
    x, sizes, source = global_merge(x0, x0, lengths, eye, 7)
    assert x.shape[1] == 7
    _assert_contiguous_partition(source)
    assert torch.allclose(sizes.sum(-1), lengths.sum(-1))
    assert torch.allclose(x, (source * lengths[:, None]) @ x0 / sizes[..., None], atol=1e-5)  # base-weighted means


def test_dense_source_is_block_diagonal():
    s = torch.eye(4)[:, :].reshape(1, 4, 4).expand(6, 4, 4)[:, :2] * 0 + torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]])
    dense = source_to_dense(s.contiguous(), batch=2)
    assert dense.shape == (2, 6, 12) and torch.allclose(dense.sum(1), torch.ones(2, 12))
    assert dense[0, 2, 4:6].sum() == 2 and dense[0, 2, :4].sum() == 0


def test_adaptive_mask_exact_count_and_inverse_size_weighting():
    lengths = torch.tensor([[1, 2, 4, 1, 8, 0]]).expand(3, -1)
    for k in range(6):
        m = adaptive_token_mask(lengths, k)
        assert (m.sum(-1) == k).all() and not m[:, 5].any()  # padding tokens are never masked
    with pytest.raises(ValueError, match="cannot mask 6"):
        adaptive_token_mask(lengths, 6)
    # one draw: P(token) = (1 / length) / sum(1 / length), checked empirically
    g = torch.Generator().manual_seed(0)
    row = torch.tensor([[1, 2, 4, 1, 8]])
    draws = 20000
    counts = adaptive_token_mask(row.expand(draws, -1), 1, g).float().mean(0)
    w = 1 / row[0].float()
    assert torch.allclose(counts, w / w.sum(), atol=0.015)


def test_mask_bases_covers_whole_tokens_and_keeps_n():
    lengths = torch.tensor([[2, 3, 3]])
    bases = torch.tensor([[0, 1, 2, N, 3, 0, 1, 2]])
    token_mask = torch.tensor([[False, True, False]])
    masked, base_mask = mask_bases(bases, token_mask, lengths_to_assignment(lengths, 8))
    assert base_mask.tolist() == [[False, False, True, True, True, False, False, False]]
    assert masked.tolist() == [[0, 1, MASK, N, MASK, 0, 1, 2]]
